"""A Gemini stream that ends cleanly before its finish reason, read by Google's own SDKs.

google-genai (Python) and @google/genai (npm) hand on the partial text without an error when
the body ends before any `finishReason`: their users cannot tell the answer was cut. Through the
proxy they get the same bytes and the same partial answer, and the record says `truncated`.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import servers
from clients import Call, run

pytestmark = pytest.mark.interop

STREAMS = Path(__file__).parent.parent / "unit" / "conformance" / "streams"
CUT = (STREAMS / "gemini_stream_cut.sse").read_bytes()
WHOLE = (STREAMS / "gemini_stream.sse").read_bytes()


@contextlib.contextmanager
def _upstream() -> Iterator[str]:
    """Answers a request whose model is `cut` with the cut stream, any other with the whole one."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            body = CUT if "/models/cut:" in self.path else WHOLE
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def proxied() -> Iterator[tuple[str, servers.Serve]]:
    servers.require_all()
    with _upstream() as upstream, servers.serve(upstream) as proxy:
        yield upstream, proxy


@pytest.mark.parametrize("client", ["genai_py", "genai_node"])
def test_the_sdks_hand_on_a_cut_answer_and_the_record_says_truncated(
    proxied: tuple[str, servers.Serve], client: str
) -> None:
    upstream, proxy = proxied
    direct = run(Call(client, "gemini", "cut", "hi"), upstream, "key", "direct")
    trace = f"gemini-cut-{client}"
    through = run(Call(client, "gemini", "cut", "hi"), proxy.url, "key", trace)
    # What the SDK's user gets: the partial text, no finish reason, and no error, both ways.
    assert (
        through
        == direct
        == {"text": "Let me think.Hello world, how are you", "toolCalls": [], "usage": None, "finish": None}
    )
    record = proxy.record(trace)
    assert (record["route"], record["model"], record["outcome"]) == ("gemini", "cut", "truncated"), record
    assert record["finish_reasons"] == [] and record["end_reason"] == "upstream_eof"
    assert "no finishReason for each candidate" in record["reasons"][0]


@pytest.mark.parametrize("client", ["genai_py", "genai_node"])
def test_a_whole_answer_is_complete_with_its_usage(proxied: tuple[str, servers.Serve], client: str) -> None:
    _, proxy = proxied
    trace = f"gemini-whole-{client}"
    got = run(Call(client, "gemini", "gemini-2.5-flash", "hi"), proxy.url, "key", trace)
    assert got["finish"] == "STOP" and got["text"].endswith("today?")
    record = proxy.record(trace)
    assert (record["route"], record["model"], record["outcome"], record["anomalies"]) == (
        "gemini",
        "gemini-2.5-flash",
        "complete",
        [],
    ), record
    assert record["finish_reasons"] == ["STOP"]
    assert record["usage"]["candidatesTokenCount"] == 9 and record["usage"]["thoughtsTokenCount"] == 12
