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
from sse_audit_proxy.core.field_names import DATA_MAPS, FIELD_NAMES, OPAQUE, TOKEN_NUMBERS
from sse_audit_proxy.core.sse import Event


def reference_opaque(value: Any, depth: int) -> Any:
    """Data a model or a client wrote: its shape alone."""
    if isinstance(value, str):
        return sk.text_length(value)
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, (int, float)):
        return 0
    if depth >= sk.MAX_DEPTH:
        return {sk.MORE: 1}
    if isinstance(value, list):
        items = [reference_opaque(v, depth + 1) for v in value[: sk.MAX_ITEMS]]
        if len(value) > sk.MAX_ITEMS:
            items.append({sk.MORE: len(value) - sk.MAX_ITEMS})
        return items
    out: dict[str, Any] = {}
    for i, (k, v) in enumerate(value.items()):
        if i >= sk.MAX_KEYS:
            out[sk.MORE] = len(value) - sk.MAX_KEYS
            break
        name = sk.text_length(k)
        same = sum(1 for o in out if o == name or o.startswith(name + "#"))
        out[name if not same else f"{name}#{same + 1}"] = reference_opaque(v, depth + 1)
    return out


def reference_shape(
    value: Any, key: str | None, depth: int, within: str | None = None, within_type: Any = None
) -> Any:
    """The definition, one call per value (as skeleton.py had it before it was made cheaper).
    `within`: the key of the object `value` is a field of; `within_type`: that object's `type`."""
    if isinstance(value, str):
        client_text = key == "stop_reason" and within == "choices"  # vLLM: the client's stop string
        # Code a model wrote (Gemini's executableCode, a Responses code interpreter call)
        client_text |= key == "code" and (
            within == "executableCode" or "code_interpreter" in str(within_type)
        )
        if (
            key in sk.VOCABULARY
            and not client_text
            and is_protocol_word(value)
            and not sk.PLACEHOLDER.fullmatch(value)
        ):
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
            if (k in OPAQUE or k not in FIELD_NAMES) and not by_data and not isinstance(v, str):
                out[name] = reference_opaque(v, depth + 1)
            else:
                out[name] = reference_shape(v, None if by_data else k, depth + 1, key, value.get("type"))
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
        *sorted(OPAQUE),
        "choices",
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
        "executableCode",
        "abc",
        "xyz",
    ]
) | st.text(max_size=8)
_STRINGS = st.sampled_from(
    ["stop", "code_interpreter_call", "chat.completion.chunk", "<12>", "two words", "", "x" * 65]
) | st.text(max_size=8)
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


def test_what_a_model_or_a_client_wrote_keeps_no_word_however_it_is_keyed() -> None:
    """Protocol words were kept under their keys at any depth: inside a tool's input (Anthropic),
    a tool call's arguments object (Ollama), an echoed JSON schema (Responses), and vLLM's
    choice `stop_reason`, the client's own stop string (outside review)."""
    frames = [
        {
            "type": "content_block_start",
            "index": 0,
            "content_block": {
                "type": "tool_use",
                "id": "toolu_1",
                "name": "update_record",
                "input": {"code": "ICD10-F32.1", "status": "HIV-positive", "type": "chemo", "age": 41},
            },
        },
        {
            "message": {
                "role": "assistant",
                "tool_calls": [{"function": {"arguments": {"status": "bankrupt"}}}],
            }
        },
        {
            "type": "response.created",
            "response": {"tools": [{"type": "function", "parameters": {"type": "secretword"}}]},
        },
        {
            "object": "chat.completion.chunk",
            "choices": [{"index": 0, "finish_reason": "stop", "stop_reason": "mystop"}],
        },
        # Gemini's function call, Responses' echoed prompt variables (second review)
        {
            "candidates": [
                {"content": {"parts": [{"functionCall": {"name": "f", "args": {"status": "bankrupt"}}}]}}
            ]
        },
        {
            "type": "response.created",
            "response": {"prompt": {"id": "p", "variables": {"code": "secretword"}}},
        },
    ]
    texts = [orjson.dumps(sk._shape(orjson.loads(orjson.dumps(f)), None, 0)).decode() for f in frames]
    for text in texts:
        for secret in (
            "ICD10",
            "HIV",
            "chemo",
            "41",
            "bankrupt",
            "secretword",
            "mystop",
            '"status"',
            '"code"',
        ):
            assert secret not in text, (secret, text)
    # The protocol's own words around them stay.
    assert (
        '"type":"tool_use"' in texts[0]
        and '"input":{"<4>":"<11>","<6>":"<12>","<4>#2":"<5>","<3>":0}' in texts[0]
    )
    assert '"type":"function"' in texts[2] and '"finish_reason":"stop"' in texts[3]
