"""Streams the audit read otherwise than the routes' own clients (an outside review, run
against openai 3.63, anthropic 2.15, google-genai 3.6, huggingface_hub 2.4, ollama 0.6 and
cohere 7.3): a byte order mark before the first frame, text and tool arguments of the wrong
type; and the memory a frame of many short `data:` lines held."""

from __future__ import annotations

import json
import tracemalloc
from typing import Any

import pytest
from first_frame_streams import CHAT, COMPLETIONS, GEMINI, MESSAGES, sse

from sse_audit_proxy.core.audit import End, StreamAudit
from sse_audit_proxy.core.dialects import dialect_for_route
from sse_audit_proxy.core.sse import SSEDecoder

BOM = b"\xef\xbb\xbf"


def verdict(route: str, body: bytes, *, json_lines: bool = False, reads: int = 1) -> tuple[str, list[str]]:
    a = StreamAudit(dialect_for_route(route)(), 0.0, event_stream=not json_lines, json_lines=json_lines)
    step = max(1, len(body) // reads)
    for i in range(0, len(body), step):
        a.feed(body[i : i + step], 0.01)
    r = a.finish(0.5, End.UPSTREAM_EOF)
    return r.outcome.value, list(r.anomalies)


def lines(*docs: Any) -> bytes:
    return b"".join(json.dumps(d).encode() + b"\n" for d in docs)


TGI = b"".join(
    b"data:" + json.dumps(d).encode() + b"\n\n"
    for d in (
        {
            "index": 1,
            "token": {"id": 1, "text": "Hel", "logprob": 0, "special": False},
            "generated_text": None,
        },
        {
            "index": 2,
            "token": {"id": 2, "text": "lo", "logprob": 0, "special": False},
            "generated_text": "Hello",
            "details": {"finish_reason": "length", "generated_tokens": 2},
        },
    )
)
OLLAMA = lines(
    {"model": "m", "created_at": "t", "message": {"role": "assistant", "content": "Hel"}, "done": False},
    {
        "model": "m",
        "created_at": "t",
        "message": {"role": "assistant", "content": "lo"},
        "done": True,
        "done_reason": "stop",
        "prompt_eval_count": 1,
        "eval_count": 2,
    },
)
COHERE = sse(
    {"type": "message-start", "id": "x", "delta": {"message": {"role": "assistant"}}},
    {"type": "content-delta", "index": 0, "delta": {"message": {"content": {"text": "Hello"}}}},
    {
        "type": "message-end",
        "delta": {"finish_reason": "COMPLETE", "usage": {"tokens": {"output_tokens": 1}}},
    },
    named=True,
)


@pytest.mark.parametrize(
    ("route", "body", "json_lines"),
    [
        # openai: the first chunk is lost ("lo"; the message's role with it)
        ("chat_completions", CHAT, False),
        ("completions", COMPLETIONS, False),
        # anthropic: message_start lost, the stream helper's get_final_message() fails
        ("messages", MESSAGES, False),
        # google-genai: "Failed to parse response as JSON" at the first line
        ("gemini", GEMINI, False),
        # huggingface_hub: the first token is lost
        ("tgi", TGI, False),
        # ollama: "Unexpected UTF-8 BOM"; read as Ollama's lines, not as a body of no shape
        ("ollama", OLLAMA, True),
    ],
)
def test_a_leading_bom_is_malformed_where_the_python_sdk_loses_the_first_frame(
    route: str, body: bytes, json_lines: bool
) -> None:
    assert verdict(route, body, json_lines=json_lines) == ("complete", [])
    for reads in (1, len(body)):  # whole, and a byte a read (the BOM split too)
        assert verdict(route, BOM + body, json_lines=json_lines, reads=reads) == (
            "complete",
            ["malformed_frame"],
        )


def test_a_bom_before_ollama_lines_still_lets_a_cut_be_seen() -> None:
    cut = OLLAMA[: OLLAMA.index(b"\n") + 1]
    assert verdict("ollama", BOM + cut, json_lines=True) == ("truncated", ["malformed_frame"])


RESPONSES = sse(
    {"type": "response.created", "response": {"id": "r", "status": "in_progress", "output": []}},
    {
        "type": "response.output_text.delta",
        "item_id": "m",
        "output_index": 0,
        "content_index": 0,
        "delta": "Hi",
    },
    {"type": "response.completed", "response": {"id": "r", "status": "completed", "output": []}},
    named=True,
)


@pytest.mark.parametrize(
    ("route", "body"),
    [
        # The openai SDK reads these by their data's `type`: the `event:` name the BOM spoils
        # is not needed (an outside review: raw reader and stream helper read all nine events).
        ("responses", RESPONSES),
        # So does the cohere SDK (it keeps the BOM, and Cohere's own streams begin so).
        ("cohere_chat", COHERE),
        # A comment first: only a keep-alive is lost (OpenRouter's `: OPENROUTER PROCESSING`).
        ("chat_completions", b": OPENROUTER PROCESSING\n\n" + CHAT),
        # No client reads a route with no dialect.
        ("other", CHAT),
    ],
)
def test_a_leading_bom_before_a_line_the_client_does_not_need_is_not_flagged(route: str, body: bytes) -> None:
    assert verdict(route, BOM + body) == verdict(route, body)
    assert verdict(route, BOM + body, reads=len(body)) == verdict(route, body)


def test_a_leading_bom_before_cohere_data_alone_is_flagged() -> None:
    # The cohere SDK keeps the BOM: a stream without `event:` lines loses its `message-start`.
    data_only = b"".join(line + b"\n" for line in COHERE.split(b"\n") if not line.startswith(b"event:"))
    assert verdict("cohere_chat", data_only) == ("complete", [])
    assert verdict("cohere_chat", BOM + data_only) == ("complete", ["malformed_frame"])


@pytest.mark.parametrize(
    "part",
    [
        {"text": 5},  # google-genai: a pydantic ValidationError
        {"functionCall": {"name": "f", "args": '{"a": 1}'}},  # arguments as OpenAI sends them
    ],
)
def test_gemini_parts_of_the_wrong_type_are_malformed(part: dict[str, Any]) -> None:
    bad = sse({"candidates": [{"content": {"parts": [part], "role": "model"}, "index": 0}]}) + GEMINI
    assert verdict("gemini", bad) == ("complete", ["malformed_frame"])


def test_gemini_parts_of_the_right_type_are_read() -> None:
    call = {"functionCall": {"name": "f", "args": {"a": 1}}}
    good = sse({"candidates": [{"content": {"parts": [call, {"text": None}]}, "index": 0}]}) + GEMINI
    assert verdict("gemini", good) == ("complete", [])


@pytest.mark.parametrize(
    "message",
    [
        {"role": "assistant", "content": 5},
        {"role": "assistant", "content": "", "thinking": ["x"]},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"function": {"name": "f", "arguments": '{"a": 1}'}}],
        },
        {"role": "assistant", "content": "", "tool_calls": [{"function": {"arguments": {"a": 1}}}]},
        {"role": "assistant", "content": "", "tool_calls": {"function": {"name": "f", "arguments": {}}}},
    ],
)
def test_ollama_lines_its_client_refuses_are_malformed(message: dict[str, Any]) -> None:
    # ollama's Python client: a pydantic ValidationError at the line.
    first = {"model": "m", "created_at": "t", "message": message, "done": False}
    assert verdict("ollama", lines(first) + OLLAMA, json_lines=True) == ("complete", ["malformed_frame"])


def test_ollama_tool_calls_as_its_client_reads_them_are_fine() -> None:
    call = {"function": {"name": "f", "arguments": {"a": 1}}}
    first = {
        "model": "m",
        "created_at": "t",
        "message": {"role": "assistant", "tool_calls": [call]},
        "done": False,
    }
    assert verdict("ollama", lines(first) + OLLAMA, json_lines=True) == ("complete", [])


def test_cohere_content_text_of_the_wrong_type_is_malformed() -> None:
    # The cohere SDK skips the event with a warning: its text is lost.
    bad = {"type": "content-delta", "index": 0, "delta": {"message": {"content": {"text": 5}}}}
    body = COHERE.replace(
        b"event: message-end",
        b"event: content-delta\ndata: " + json.dumps(bad).encode() + b"\n\nevent: message-end",
    )
    assert verdict("cohere_chat", body) == ("complete", ["malformed_frame"])


def test_a_frame_of_many_short_data_lines_holds_about_the_cap() -> None:
    """Each `data:` line was held as its own bytes object in a list: a frame of 8-byte lines
    under the 1 MiB cap held about 7 MiB (an outside review)."""
    cap = 1 << 20
    decoder = SSEDecoder(cap)
    body = b"data:xy\n" * (cap // 8 - 1)
    tracemalloc.start()
    try:
        for i in range(0, len(body), 4096):
            assert decoder.feed(body[i : i + 4096]) == []
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert decoder.buffered_bytes < cap
    assert held < 2 * cap, held
    (event,) = decoder.feed(b"\n")
    assert event.data == b"\n".join([b"xy"] * (cap // 8 - 1))


@pytest.mark.parametrize(
    "body",
    [
        OLLAMA.replace(b"\n", b"\n\n"),  # a blank line after each
        OLLAMA + b"\n",  # one at the end
        OLLAMA.replace(b"\n", b"\r\n") + b"\r\n",
        OLLAMA.replace(b"\n", b"\n  \n", 1),  # blanks only
    ],
)
def test_a_blank_line_between_ollama_lines_is_malformed(body: bytes) -> None:
    # ollama's Python client reads each line as JSON: "Expecting value: line 1 column 1".
    assert verdict("ollama", body, json_lines=True) == ("complete", ["malformed_frame"])
    assert verdict("ollama", OLLAMA.replace(b"\n", b"\r\n"), json_lines=True) == ("complete", [])


def test_blank_lines_are_not_judged_where_no_ollama_stream_is_read() -> None:
    # JSON lines on Ollama's paths that are not Ollama's: read as on a route with no dialect.
    other = lines({"a": 1}, {"b": 2})
    assert verdict("ollama", other.replace(b"\n", b"\n\n"), json_lines=True) == verdict(
        "ollama", other, json_lines=True
    )


@pytest.mark.parametrize(
    ("route", "body", "json_lines"),
    [
        # google-genai reads the first line, whatever it is, as JSON ("\ufeff" alone too)
        ("gemini", b"\n" + GEMINI, False),
        ("gemini", b"\r\n" + GEMINI, False),
        # a second BOM: the Python SDKs lose the line to it as well (a third-pass review)
        ("chat_completions", BOM + CHAT, False),
        ("ollama", BOM + OLLAMA, True),
    ],
)
def test_what_a_bom_spoils_for_the_route_s_sdk_is_flagged(route: str, body: bytes, json_lines: bool) -> None:
    for reads in (1, len(body)):
        assert verdict(route, BOM + body, json_lines=json_lines, reads=reads) == (
            "complete",
            ["malformed_frame"],
        )


def test_a_bom_before_an_anthropic_ping_is_not_flagged() -> None:
    # Only the ping's name is lost, and the anthropic SDK skips pings anyway.
    ping = b'event: ping\ndata: {"type": "ping"}\n\n'
    assert (
        verdict("messages", BOM + ping + MESSAGES) == verdict("messages", ping + MESSAGES) == ("complete", [])
    )


def test_blanks_after_ollama_s_last_line_are_a_line_to_its_client() -> None:
    # "...}\n " : ollama's client reads the trailing blank as a line, and fails on it.
    assert verdict("ollama", OLLAMA + b" ", json_lines=True) == ("complete", ["malformed_frame"])
