"""Frame skeletons: a frame's JSON structure with its text replaced by the text's length.

Pure. What an incident needs to see (and a regression test needs to replay) is the shape of
a frame: which fields, which protocol words (`type`, `finish_reason`, `object`, ...), which
numbers (indexes, token counts); never what the model or the user wrote. So every string is
replaced by `"<N>"` (N: its length in characters) unless it is the value of a protocol field
and looks like a protocol word. Bounded: depth, items per container and the skeleton's size.
"""

from __future__ import annotations

import re
from itertools import islice
from typing import Any

import orjson

from sse_audit_proxy.core.dialects.base import DONE_SENTINEL, is_protocol_word
from sse_audit_proxy.core.sse import Event

# Fields whose string values are protocol vocabulary, kept as they are when they look like it.
VOCABULARY = frozenset(
    {
        "type",
        "object",
        "finish_reason",
        "stop_reason",
        "role",
        "status",
        "reason",
        "event",
        "code",
        "native_finish_reason",
        "stop_sequence_type",
    }
)
PLACEHOLDER = re.compile(r"<(\d+)>")
MAX_DEPTH = 8
MAX_KEYS = 64  # per object (a Responses `response` object has ~30 fields; usage among them)
MAX_ITEMS = 16  # per array; beyond either: {"…more": N}
MAX_SKELETON_BYTES = 2048
MORE = "…more"


def text_length(value: str) -> str:
    return f"<{len(value)}>"


def _shape(value: Any, key: str | None, depth: int) -> Any:
    # orjson gives exact types (no subclasses): dispatched on type(value), and the strings and
    # numbers inside a container shaped in its loop, not by a call each (a skeleton is taken of
    # a few frames per stream, and the calls and checks were most of its cost; profiled).
    kind = type(value)
    if kind is str:
        return _text(value, key)
    if kind in _SCALARS:
        return value
    if depth >= MAX_DEPTH:
        return {MORE: 1}
    if kind is not dict and kind is not list:
        return None
    depth += 1
    if kind is list:
        out_list: list[Any] = []
        for v in value[:MAX_ITEMS] if len(value) > MAX_ITEMS else value:
            kind = type(v)
            if kind is str:
                out_list.append(_text(v, key) if key in VOCABULARY else f"<{len(v)}>")
            elif kind in _SCALARS:
                out_list.append(v)
            else:
                out_list.append(_shape(v, key, depth))
        if len(value) > MAX_ITEMS:
            out_list.append({MORE: len(value) - MAX_ITEMS})
        return out_list
    out: dict[str, Any] = {}
    names = _KEY_NAMES
    for k, v in islice(value.items(), MAX_KEYS) if len(value) > MAX_KEYS else value.items():
        name = names.get(k) or _key_name(k)
        kind = type(v)
        if kind is str:
            out[name] = _text(v, k) if k in VOCABULARY else f"<{len(v)}>"
        elif kind in _SCALARS:
            out[name] = v
        else:
            out[name] = _shape(v, k, depth)
    if len(value) > MAX_KEYS:
        out[MORE] = len(value) - MAX_KEYS
    return out


def _text(value: str, key: str | None) -> str:
    if key in VOCABULARY and len(value) <= 64:  # longer: never a word (is_protocol_word)
        word = _WORDS.get(value)
        if word is None:
            word = _is_word(value)
        if word:
            return value
    return f"<{len(value)}>"


def _is_word(value: str) -> bool:
    word = bool(is_protocol_word(value)) and not PLACEHOLDER.fullmatch(value)
    if len(_WORDS) < _MAX_WORDS:
        _WORDS[value] = word
    return word


# What orjson gives that is kept as it is (exact types: orjson makes no subclasses).
_SCALARS = frozenset({int, float, bool, type(None)})
# Keys are the schema's, and protocol fields' values its vocabulary: few distinct per upstream,
# so what was decided about them is remembered (bounded: an upstream may send endless new ones).
_KEY_NAMES: dict[str, str] = {}
_MAX_KEY_NAMES = 1024
_WORDS: dict[str, bool] = {}  # a protocol field's value -> kept as it is
_MAX_WORDS = 1024


def _key_name(key: str) -> str:
    name = key if is_protocol_word(key) else text_length(key)
    if len(key) <= 64 and len(_KEY_NAMES) < _MAX_KEY_NAMES:
        _KEY_NAMES[key] = name
    return name


def skeleton(event: Event) -> str:
    """One frame's skeleton, as compact JSON text (what the audit holds: orjson's own bytes
    keep a 4 KiB buffer, the decoded text is exactly its length)."""
    name = event.event
    doc: dict[str, Any] = {"bytes": len(event.data)}
    if name:  # absent when the frame had no `event:` line (most frames): held per stream
        doc["event"] = _KEY_NAMES.get(name) or _key_name(name)  # named as a key is
    data = event.data
    if data == DONE_SENTINEL:
        doc["data"] = "[DONE]"
    else:
        try:
            parsed = orjson.loads(data)
        except orjson.JSONDecodeError:
            doc["raw"] = True  # not JSON: only its size is known
        else:
            doc["data"] = _shape(parsed, None, 0)
    out = orjson.dumps(doc)
    if len(out) > MAX_SKELETON_BYTES:
        out = orjson.dumps({"event": doc.get("event"), "bytes": doc["bytes"], "truncated": True})
    return out.decode()


def split_entry(entry: str) -> tuple[int, int, dict[str, Any]]:
    """An audit's skeleton entry, "NUMBER,KIND_BITS,JSON": (frame number, kind bits, skeleton)."""
    number, bits, text = entry.split(",", 2)
    doc: dict[str, Any] = orjson.loads(text)
    return int(number), int(bits), doc
