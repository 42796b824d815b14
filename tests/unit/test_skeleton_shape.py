"""Frame skeletons: the shaping loop that handles scalars in place gives what the plain
recursive definition gives, for any JSON value (keys, vocabulary words, objects keyed by
data, token numbers, depth, bounds)."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from sse_audit_proxy.core import skeleton as sk
from sse_audit_proxy.core.dialects.base import is_protocol_word
from sse_audit_proxy.core.field_names import DATA_MAPS, FIELD_NAMES, TOKEN_NUMBERS
from sse_audit_proxy.core.sse import Event


def reference_shape(value: Any, key: str | None, depth: int) -> Any:
    """The definition, one call per value (as skeleton.py had it before it was made cheaper)."""
    if isinstance(value, str):
        if key in sk.VOCABULARY and is_protocol_word(value) and not sk.PLACEHOLDER.fullmatch(value):
            return value
        return sk.text_length(value)
    if isinstance(value, bool) or value is None or isinstance(value, float):
        return value
    if isinstance(value, int):
        return 0 if key in TOKEN_NUMBERS else value
    if depth >= sk.MAX_DEPTH:
        return {sk.MORE: 1}
    if isinstance(value, dict):
        by_data = key in DATA_MAPS and not isinstance(value.get("token"), str)
        out: dict[str, Any] = {}
        for i, (k, v) in enumerate(value.items()):
            if i >= sk.MAX_KEYS:
                out[sk.MORE] = len(value) - sk.MAX_KEYS
                break
            if k in FIELD_NAMES and not by_data:
                name = k
            else:  # the n-th key of its length: "<N>", "<N>#2", ...
                name = sk.text_length(k)
                same = sum(1 for o in out if o == name or o.startswith(name + "#"))
                name = name if not same else f"{name}#{same + 1}"
            out[name] = reference_shape(v, None if by_data else k, depth + 1)
        return out
    if isinstance(value, list):
        items = [reference_shape(v, key, depth + 1) for v in value[: sk.MAX_ITEMS]]
        if len(value) > sk.MAX_ITEMS:
            items.append({sk.MORE: len(value) - sk.MAX_ITEMS})
        return items
    return None


_KEYS = st.sampled_from(
    [
        *sorted(sk.VOCABULARY),
        *sorted(DATA_MAPS),
        *sorted(TOKEN_NUMBERS),
        "index",
        "delta",
        "content",
        "logprob",
        "token",
        "a b",
        "<3>",
        "x" * 70,
        sk.MORE,
        "Patient",
        "abc",
        "xyz",
    ]
) | st.text(max_size=8)
_STRINGS = st.sampled_from(["stop", "chat.completion.chunk", "<12>", "two words", "", "x" * 65]) | st.text(
    max_size=8
)
_SCALARS = (
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False) | _STRINGS
)
_JSON = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=20) | st.dictionaries(_KEYS, inner, max_size=70),
    max_leaves=120,
)


@settings(max_examples=300, deadline=None)
@given(_JSON)
def test_shape_matches_the_definition(value: Any) -> None:
    parsed = orjson.loads(orjson.dumps(value))  # what skeleton() shapes: orjson's own values
    # As JSON text: the order of the keys is part of the skeleton.
    expected = orjson.dumps(reference_shape(parsed, None, 0))
    assert orjson.dumps(sk._shape(parsed, None, 0)) == expected
    # Twice: the second time key names and vocabulary words come from the caches.
    assert orjson.dumps(sk._shape(parsed, None, 0)) == expected


@settings(max_examples=200, deadline=None)
@given(_JSON, st.sampled_from(["", "message_start", "a b", "<3>", "x" * 70]) | st.text(max_size=8))
def test_skeleton_matches_the_definition(value: Any, name: str) -> None:
    data = orjson.dumps(value)
    doc: dict[str, Any] = {"bytes": len(data)}
    if name:
        doc["event"] = name if is_protocol_word(name) else sk.text_length(name)  # as before
    doc["data"] = reference_shape(orjson.loads(data), None, 0)
    expected = orjson.dumps(doc)
    if len(expected) > sk.MAX_SKELETON_BYTES:
        expected = orjson.dumps({"event": doc.get("event"), "bytes": len(data), "truncated": True})
    for _ in range(2):  # the second time from the caches
        assert sk.skeleton(Event(name, data, "")) == expected.decode()


def test_deep_frame_is_cut_at_max_depth_as_before() -> None:
    doc: Any = {"type": "stop"}
    for _ in range(sk.MAX_DEPTH + 3):
        doc = {"choices": [doc, "text", 1]}
    data = orjson.dumps(doc)
    expected = orjson.dumps(
        {"bytes": len(data), "data": reference_shape(orjson.loads(data), None, 0)}
    ).decode()
    assert sk.skeleton(Event("", data, "")) == expected
