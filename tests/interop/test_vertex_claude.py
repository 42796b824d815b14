"""Claude on Vertex AI through the proxy, read by the anthropic SDK's own AnthropicVertex.

The SDK moves `model` out of the body into the URL (`…/publishers/anthropic/models/{model}:
streamRawPredict`): on a route with no dialect a stream cut before `message_stop` was
`complete`, with no model. It is the Messages stream, judged as on `/v1/messages`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import anthropic
import pytest
import servers
from anthropic.lib.vertex import AnthropicVertex

pytestmark = pytest.mark.interop

STREAMS = Path(__file__).parent.parent / "unit" / "conformance" / "streams"
MODELS = {
    "claude-sonnet-4@20250514": (STREAMS / "messages_text.sse").read_bytes(),
    "claude-cut@1": (STREAMS / "messages_truncated.sse").read_bytes(),
}


def _read(base: str, model: str, trace: str) -> dict[str, object]:
    client = AnthropicVertex(
        region="us-east5",
        project_id="p1",
        access_token="ya29.not-a-real-token",
        base_url=base + "/v1",
        max_retries=0,
        default_headers={"X-Client-Request-Id": trace},
    )
    text = ""
    try:
        with client.messages.stream(
            model=model, max_tokens=64, messages=[{"role": "user", "content": "hi"}]
        ) as stream:
            for event in stream:
                if event.type == "text":
                    text += event.text
            final = stream.get_final_message()
        return {"text": text, "stop": final.stop_reason}
    except anthropic.APIError as exc:
        return {"text": text, "error": type(exc).__name__}


@pytest.fixture(scope="module")
def proxied() -> Iterator[tuple[str, servers.Serve]]:
    servers.require_all()
    # Answers `…/models/{model}:streamRawPredict` with that model's recorded stream.
    answer = lambda path: MODELS[path.rpartition("/models/")[2].partition(":")[0]]  # noqa: E731
    with servers.replay(answer) as upstream, servers.serve(upstream) as proxy:
        yield upstream, proxy


@pytest.mark.parametrize(
    ("model", "outcome"), [("claude-sonnet-4@20250514", "complete"), ("claude-cut@1", "truncated")]
)
def test_claude_on_vertex_is_judged_as_messages(
    proxied: tuple[str, servers.Serve], model: str, outcome: str
) -> None:
    upstream, proxy = proxied
    trace = f"vertex-{model.partition('@')[0]}"
    assert _read(proxy.url, model, trace) == _read(upstream, model, "direct")
    record = proxy.record(trace)
    assert (record["route"], record["model"], record["outcome"]) == ("messages", model, outcome), record
    if outcome == "complete":
        assert record["finish_reasons"] == ["end_turn"] and record["anomalies"] == []
