"""A byte order mark before the first frame, against the routes' Python SDKs.

The event-stream spec takes a leading BOM off, and so do browsers and the npm SDKs; the Python
SDKs read it as part of the first line, so that line is no `data:` field to them: the openai
SDK loses the first chunk, the anthropic SDK's stream helper fails for want of
`message_start`, google-genai fails to parse the line. The audit, which decoded as the spec
says, called such a stream `complete` with no anomaly (an outside review). Each body is served
over a real socket, with and without a BOM, to the real client and to the audit.
"""

from __future__ import annotations

import pathlib
import threading
import warnings
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import anthropic
import openai
import pytest
from clients import verdict
from first_frame_streams import CHAT, COMPLETIONS, GEMINI, MESSAGES
from google import genai
from google.genai import types as genai_types

BOM = b"\xef\xbb\xbf"
HERE = pathlib.Path(__file__).parent


class _Body(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    body = b""

    def log_message(self, *_: Any) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Content-Length", str(len(self.body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(self.body)
        self.close_connection = True


@pytest.fixture(scope="module")
def server() -> Iterator[ThreadingHTTPServer]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Body)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield httpd
    finally:
        httpd.shutdown()
        httpd.server_close()


def _chat(base: str) -> str:
    client = openai.OpenAI(api_key="sk", base_url=f"{base}/v1", max_retries=0)
    with client:
        stream = client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)


def _completions(base: str) -> str:
    client = openai.OpenAI(api_key="sk", base_url=f"{base}/v1", max_retries=0)
    with client:
        return "".join(
            c.choices[0].text for c in client.completions.create(model="m", prompt="hi", stream=True)
        )


def _messages(base: str) -> str:
    client = anthropic.Anthropic(api_key="sk", base_url=base, max_retries=0)
    with (
        client,
        client.messages.stream(model="c", max_tokens=5, messages=[{"role": "user", "content": "hi"}]) as s,
    ):
        for _ in s:
            pass
        block = s.get_final_message().content[0]
        return block.text if block.type == "text" else ""


def _gemini(base: str) -> str:
    client = genai.Client(
        api_key="k",
        http_options=genai_types.HttpOptions(
            base_url=base, api_version="v1beta", retry_options=genai_types.HttpRetryOptions(attempts=1)
        ),
    )
    try:
        return "".join(c.text or "" for c in client.models.generate_content_stream(model="g", contents="hi"))
    finally:
        client.close()


def _read(server: ThreadingHTTPServer, client: Callable[[str], str], body: bytes) -> str:
    """What the client made of the body: its text, or what it raised."""
    _Body.body = body
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return client(f"http://127.0.0.1:{server.server_address[1]}")
    except Exception as exc:  # what the client raises is the point, whatever its type
        return f"raised {type(exc).__name__}"


@pytest.mark.parametrize(
    ("route", "client", "body"),
    [
        ("chat_completions", _chat, CHAT),
        ("completions", _completions, COMPLETIONS),
        ("messages", _messages, MESSAGES),
        ("gemini", _gemini, GEMINI),
    ],
    ids=["openai-chat", "openai-completions", "anthropic-helper", "google-genai"],
)
def test_the_audit_flags_a_bom_the_python_sdk_loses_the_first_frame_to(
    server: ThreadingHTTPServer, route: str, client: Callable[[str], str], body: bytes
) -> None:
    assert _read(server, client, body) == "Hello"
    assert verdict(route, body) == ("complete", [])
    lost = _read(server, client, BOM + body)
    assert lost != "Hello", "the client took the BOM off: the rule no longer holds for it"
    assert verdict(route, BOM + body) == ("complete", ["malformed_frame"]), lost


def _responses(base: str) -> str:
    client = openai.OpenAI(api_key="sk", base_url=f"{base}/v1", max_retries=0)
    with client, client.responses.stream(model="m", input="hi") as s:
        for _ in s:
            pass
        return s.get_final_response().output_text


def test_a_bom_before_an_event_line_the_sdk_does_not_need_is_not_flagged(server: ThreadingHTTPServer) -> None:
    """A Responses stream begins with `event: response.created`: the BOM spoils only that name,
    and the openai SDK reads its events by their data's `type` (a second-pass review)."""
    body = (HERE / "data" / "responses" / "aimock_hello.sse").read_bytes()
    assert body.startswith(b"event: ")
    whole = _read(server, _responses, body)
    assert whole and not whole.startswith("raised")
    assert _read(server, _responses, BOM + body) == whole
    assert verdict("responses", BOM + body) == verdict("responses", body)
