"""An upstream puts text in `finish_reason` (a gateway bug, or a hostile upstream).

The finish reason goes into the stream_end line, the evidence and a metric label. The real
`serve` process relays the stream byte for byte, and none of its output or metrics holds the
text: the record says `other`."""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson
from peers import serve

from tests.reliability_support import CHAT, STREAM_BODY, Tally, streaming_handler

MARKER = "completion-text-that-must-stay-in-the-stream"
REASON = f"{MARKER} " * 200


def frames() -> bytes:
    choice = {"index": 0, "delta": {"content": "hi"}, "finish_reason": REASON}
    return b"data: " + orjson.dumps({"choices": [choice]}) + b"\n\ndata: [DONE]\n\n"


async def test_text_in_a_finish_reason_reaches_the_client_and_nothing_else(upstream: Any) -> None:
    url = await upstream(streaming_handler([frames()], Tally()))
    async with serve(url) as child, aiohttp.ClientSession() as http:
        async with http.post(child.url / CHAT.lstrip("/"), json=STREAM_BODY) as resp:
            assert resp.status == 200
            body = await resp.read()
        async with http.get(child.metrics_url / "metrics") as resp:
            exposition = await resp.text()

    assert body == frames()  # relayed byte for byte
    end = child.events("stream_end")[-1]
    assert end["finish_reasons"] == ["other"]
    assert end["outcome"] == "complete"
    output = orjson.dumps(child.lines).decode() + child.stderr.decode(errors="replace")
    assert MARKER not in output
    assert MARKER.replace("-", "") not in exposition and MARKER not in exposition
    assert 'finish_reason="other"' in exposition
