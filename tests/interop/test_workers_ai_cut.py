"""A Workers AI stream that ends cleanly before `[DONE]`, read by Cloudflare's own client.

Cloudflare's `workers-ai-provider` (the AI SDK on Workers AI's `/ai/run/@cf/...`) calls a stream
that ends with neither `[DONE]` nor a finish reason "stream-truncated" and gives the finish
reason `error`, the partial text kept. Through the proxy it gets the same, and the record says
`truncated` (a route with no dialect said `complete`); a whole stream is `complete` both ways.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import servers
from clients import Call, run

pytestmark = pytest.mark.interop

STREAMS = Path(__file__).parent.parent / "unit" / "conformance" / "streams"
CUT = (STREAMS / "workers_ai_stream_cut.sse").read_bytes()
WHOLE = (STREAMS / "workers_ai_stream.sse").read_bytes()


@pytest.fixture(scope="module")
def proxied() -> Iterator[tuple[str, servers.Serve]]:
    servers.require_all()
    answer = lambda path: CUT if path.endswith("/cut") else WHOLE  # noqa: E731
    with servers.replay(answer) as upstream, servers.serve(upstream) as proxy:
        yield upstream, proxy


@pytest.mark.parametrize(
    ("model", "finish", "outcome"), [("cut", "error", "truncated"), ("whole", "stop", "complete")]
)
def test_cloudflares_client_and_the_record_agree_on_a_cut(
    proxied: tuple[str, servers.Serve], model: str, finish: str, outcome: str
) -> None:
    upstream, proxy = proxied
    call = Call("workers_ai_node", "workers_ai", f"@cf/meta/{model}", "hi")
    direct = run(call, upstream, "key", "direct")
    trace = f"workers-ai-{model}"
    through = run(call, proxy.url, "key", trace)
    assert through == direct == {"text": "New York is", "toolCalls": [], "usage": None, "finish": finish}
    record = proxy.record(trace)
    assert (record["route"], record["model"], record["outcome"]) == (
        "workers_ai",
        f"@cf/meta/{model}",
        outcome,
    )
