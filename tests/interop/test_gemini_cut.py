"""A Gemini stream that ends cleanly before its finish reason, read by Google's own SDKs.

google-genai (Python) and @google/genai (npm) hand on the partial text without an error when
the body ends before any `finishReason`: their users cannot tell the answer was cut. Through the
proxy they get the same bytes and the same partial answer, and the record says `truncated`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import servers
from clients import Call, run

pytestmark = pytest.mark.interop

STREAMS = Path(__file__).parent.parent / "unit" / "conformance" / "streams"
CUT = (STREAMS / "gemini_stream_cut.sse").read_bytes()
WHOLE = (STREAMS / "gemini_stream.sse").read_bytes()


@pytest.fixture(scope="module")
def proxied() -> Iterator[tuple[str, servers.Serve]]:
    servers.require_all()
    # A request whose model is `cut` gets the cut stream, any other the whole one.
    answer = lambda path: CUT if "/models/cut:" in path else WHOLE  # noqa: E731
    with servers.replay(answer) as upstream, servers.serve(upstream) as proxy:
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
