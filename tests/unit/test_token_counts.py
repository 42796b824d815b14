"""Token counts as the record keeps them: what a Prometheus counter can add and a JSON log line
can carry. A gateway's negative count, or an Anthropic prompt that sums three counts near
2**64, is no count (None): before, the first failed the metrics sink (a counter cannot go
down) and the second the evidence line (orjson writes 64-bit integers at most)."""

from __future__ import annotations

import orjson
import pytest

from sse_audit_proxy.core.audit import End, StreamAudit, StreamResult
from sse_audit_proxy.core.dialects.anthropic import AnthropicMessages
from sse_audit_proxy.core.dialects.chat import ChatCompletions

U64 = (1 << 64) - 1


def _chat(usage: dict[str, object]) -> StreamResult:
    audit = StreamAudit(ChatCompletions(), 0.0)
    audit.feed(b'data: {"choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":"stop"}]}\n\n', 0.1)
    audit.feed(b'data: {"choices":[],"usage":' + orjson.dumps(usage) + b"}\n\ndata: [DONE]\n\n", 0.2)
    return audit.finish(0.3, End.UPSTREAM_EOF)


def _anthropic(usage: dict[str, object]) -> StreamResult:
    audit = StreamAudit(AnthropicMessages(), 0.0)
    start = {"type": "message_start", "message": {"id": "m", "usage": usage}}
    audit.feed(b"event: message_start\ndata: " + orjson.dumps(start) + b"\n\n", 0.0)
    audit.feed(
        b'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"end_turn"},'
        b'"usage":{"output_tokens":5}}\n\nevent: message_stop\ndata: {"type":"message_stop"}\n\n',
        0.1,
    )
    return audit.finish(0.3, End.UPSTREAM_EOF)


@pytest.mark.parametrize(
    ("usage", "prompt", "completion"),
    [
        ({"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}, 3, 4),
        ({"prompt_tokens": -3, "completion_tokens": 4, "total_tokens": 1}, None, 4),
        ({"prompt_tokens": 3, "completion_tokens": U64, "total_tokens": 7}, 3, None),
    ],
)
def test_chat_counts(usage: dict[str, object], prompt: int | None, completion: int | None) -> None:
    result = _chat(usage)
    assert (result.prompt_tokens, result.completion_tokens) == (prompt, completion)
    assert result.usage == usage  # the upstream's numbers are logged as they came
    orjson.dumps([result.prompt_tokens, result.completion_tokens])


@pytest.mark.parametrize(
    ("usage", "prompt"),
    [
        ({"input_tokens": 3, "cache_read_input_tokens": 10}, 13),
        ({"input_tokens": U64, "cache_creation_input_tokens": U64, "cache_read_input_tokens": U64}, None),
        ({"input_tokens": -3, "cache_read_input_tokens": 10}, 10),
    ],
)
def test_anthropic_prompt_is_the_sum_of_valid_counts(usage: dict[str, object], prompt: int | None) -> None:
    result = _anthropic(usage)
    assert (result.prompt_tokens, result.completion_tokens) == (prompt, 5)
    orjson.dumps(result.prompt_tokens)
