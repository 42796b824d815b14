"""An upstream sends a usage object of a hostile shape: nested hundreds deep, very wide, or
with a negative count.

Usage goes into the stream_end line (only its numbers). The real `serve` process relays the
stream byte for byte, and still writes exactly one stream_end line for it, with a usage that
renders, bounded in depth and size; no sink fails."""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson
import pytest
from peers import serve

from tests.reliability_support import CHAT, STREAM_BODY, Tally, streaming_handler

HEAD = b'"prompt_tokens":1,"completion_tokens":1,"total_tokens":2'
DEEP = b"{" + HEAD + b',"n":{"x":1' * 400 + b"}" * 400 + b"}"
WIDE = b"{" + HEAD + b"".join(b',"k%d":{"a":1,"b":2,"c":{"d":3}}' % i for i in range(5000)) + b"}"
NEGATIVE = b'{"prompt_tokens":-1,"completion_tokens":3,"total_tokens":2}'  # a counter cannot go down


def frames(usage: bytes) -> bytes:
    return (
        b'data: {"choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":"stop"}]}\n\n'
        b'data: {"choices":[],"usage":' + usage + b"}\n\ndata: [DONE]\n\n"
    )


@pytest.mark.parametrize("usage", [DEEP, WIDE, NEGATIVE], ids=["deep", "wide", "negative"])
async def test_a_hostile_usage_shape_still_ends_in_one_record(upstream: Any, usage: bytes) -> None:
    url = await upstream(streaming_handler([frames(usage)], Tally()))
    async with (
        serve(url) as child,
        aiohttp.ClientSession() as http,
        http.post(child.url / CHAT.lstrip("/"), json=STREAM_BODY) as resp,
    ):
        assert resp.status == 200
        body = await resp.read()

    assert body == frames(usage)  # relayed byte for byte
    ends = child.events("stream_end")
    events = [line.get("event") for line in child.lines]
    assert len(ends) == 1 and "sink_failed" not in events, events
    end = ends[0]
    assert end["outcome"] == "complete"
    assert end["usage"]["total_tokens"] == 2
    assert len(orjson.dumps(end)) < 8 << 10  # the line stays a log line
