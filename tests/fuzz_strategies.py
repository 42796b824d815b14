"""Hypothesis strategies shared by the property tests and the atheris fuzz harness' seeds."""

from __future__ import annotations

import itertools
from typing import Any

from hypothesis import strategies as st

# Bytes that mean something to an SSE decoder, so random streams hit its branches often.
SSE_TOKENS = [
    b"data:",
    b"data: ",
    b"event:",
    b"id:",
    b"retry:",
    b":",
    b": ping",
    b"\n",
    b"\r",
    b"\r\n",
    b"\n\n",
    b" ",
    b"x",
    b"\xef\xbb\xbf",
    b"\xef",
    b"\xe2\x82\xac",
    b"\x00",
    b"[DONE]",
    b"{}",
    b'{"a":1}',
]

sse_bytes = st.one_of(
    st.binary(max_size=300),
    st.lists(st.sampled_from(SSE_TOKENS) | st.binary(max_size=8), max_size=80).map(b"".join),
)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


cuts = st.lists(st.integers(min_value=0, max_value=1 << 16), max_size=40)

# Keys and values that the dialects look at, so generated JSON reaches deep branches.
KEYS = [
    "type",
    "delta",
    "choices",
    "index",
    "text",
    "content",
    "reasoning",
    "tool_calls",
    "function",
    "arguments",
    "id",
    "usage",
    "finish_reason",
    "response",
    "status",
    "sequence_number",
    "output_index",
    "item_id",
    "item",
    "message",
    "content_block",
    "partial_json",
    "stop_reason",
    "error",
    "incomplete_details",
    "reason",
    "input",
    "thinking",
    "prompt_tokens",
    "input_tokens",
    "output_tokens",
    "object",
]
TYPES = [
    "response.output_text.delta",
    "response.function_call_arguments.delta",
    "response.function_call_arguments.done",
    "response.output_item.added",
    "response.output_item.done",
    "response.completed",
    "response.done",
    "response.incomplete",
    "response.failed",
    "error",
    "message_start",
    "content_block_start",
    "content_block_delta",
    "message_delta",
    "message_stop",
    "ping",
    "text_delta",
    "input_json_delta",
    "thinking_delta",
    "function_call",
    "tool_use",
    "incomplete",
    "failed",
    "completed",
]
scalars = (
    st.none()
    | st.booleans()
    | st.integers(-3, 5)
    | st.floats(allow_nan=False)
    | st.sampled_from(TYPES)
    | st.text(max_size=6)
    | st.sampled_from(["{", "}", "{}"])
)
json_values: Any = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=4), inner, max_size=5)
    ),
    max_leaves=25,
)
