"""Frame skeletons: a frame's JSON structure with its text replaced by the text's length.

Pure. What an incident needs to see (and a regression test needs to replay) is the shape of
a frame: which fields, which protocol words (`type`, `finish_reason`, `object`, ...), which
numbers (indexes, token counts); never what the model or the user wrote. So every string is
replaced by `"<N>"` (N: its length in characters) unless it is the value of a protocol field
and looks like a protocol word. A key is kept only when it is a field name of the protocols
(field_names.py), and not inside an object keyed by data (a token's text keys Completions'
`top_logprobs`); any other key is `"<N>"` too, `"<N>#2"`, `"<N>#3"`, ... after the first of
that length in the same object, so an object keeps its number of keys, and its value is its
shape alone (every number 0: numbers under a name no protocol gives may be token IDs). Integers
that are text in another form (token IDs, a token's UTF-8 bytes) are 0. Bounded: depth, items per container
and the skeleton's size.
"""

from __future__ import annotations

import re
from collections.abc import Container
from itertools import islice
from typing import Any

import orjson

from sse_audit_proxy.core.dialects.base import is_done, is_protocol_word
from sse_audit_proxy.core.field_names import DATA_MAPS, FIELD_NAMES, OPAQUE, TOKEN_NUMBERS
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
        "done_reason",  # Ollama's
        "stop_type",  # llama.cpp's native frames
        "event_type",  # Cohere's v1
        "finishReason",  # Gemini's
        "blockReason",
    }
)
PLACEHOLDER = re.compile(r"<(\d+)>")
KEY_PLACEHOLDER = re.compile(r"<(\d+)>(?:#(\d+))?")  # a key: "<N>", "<N>#2", ...
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
        words = key in VOCABULARY
        numbers = key in TOKEN_NUMBERS
        for v in value[:MAX_ITEMS] if len(value) > MAX_ITEMS else value:
            kind = type(v)
            if kind is str:
                out_list.append(_text(v, key) if words else f"<{len(v)}>")
            elif kind in _SCALARS:
                out_list.append(0 if numbers and kind is int else v)
            else:
                out_list.append(_shape(v, key, depth))
        if len(value) > MAX_ITEMS:
            out_list.append({MORE: len(value) - MAX_ITEMS})
        return out_list
    if key in DATA_MAPS and type(value.get("token")) is not str:
        return _data_map(value, depth)
    out: dict[str, Any] = {}
    for k, v in islice(value.items(), MAX_KEYS) if len(value) > MAX_KEYS else value.items():
        if k not in FIELD_NAMES:
            # No field of the protocols: its numbers may be text in another form (SGLang's
            # `output_ids`, the prompt's token IDs in its logprobs), so only its shape is kept.
            out[_placeholder(k, out)] = _opaque(v, depth)
            continue
        name = k
        kind = type(v)
        if kind is str:
            # vLLM's `stop_reason` on a choice is the stop string the client sent (Anthropic's,
            # on a message, is a protocol word), and a `code` of code the model wrote is no
            # error's code.
            words = k in VOCABULARY and not (
                (k == "stop_reason" and key == "choices") or (k == "code" and written_code(key, value))
            )
            out[name] = _text(v, k) if words else f"<{len(v)}>"
        elif k in OPAQUE:
            out[name] = _opaque(v, depth)
        elif kind in _SCALARS:
            out[name] = 0 if kind is int and k in TOKEN_NUMBERS else v
        else:
            out[name] = _shape(v, k, depth)
    if len(value) > MAX_KEYS:
        out[MORE] = len(value) - MAX_KEYS
    return out


def written_code(key: str | None, value: dict[str, Any]) -> bool:
    """Whether an object's `code` is code a model wrote: Gemini's `executableCode`, a Responses
    code interpreter call (`code_interpreter_call`, `response.code_interpreter_call_code.done`)."""
    return key == "executableCode" or "code_interpreter" in str(value.get("type"))


def _data_map(value: dict[str, Any], depth: int) -> dict[str, Any]:
    """An object keyed by data: every key a placeholder, its values shaped as no field's."""
    out: dict[str, Any] = {}
    for k, v in islice(value.items(), MAX_KEYS) if len(value) > MAX_KEYS else value.items():
        out[_placeholder(k, out)] = _shape(v, None, depth)
    if len(value) > MAX_KEYS:
        out[MORE] = len(value) - MAX_KEYS
    return out


def _opaque(value: Any, depth: int) -> Any:
    """Data a model or a client wrote (field_names.OPAQUE): its shape alone. Every key is a
    placeholder, every string its length, every number 0."""
    kind = type(value)
    if kind is str:
        return f"<{len(value)}>"
    if kind is int or kind is float:
        return 0
    if kind is not dict and kind is not list:
        return value if kind in _SCALARS else None  # true, false, null
    if depth >= MAX_DEPTH:
        return {MORE: 1}
    depth += 1
    if kind is list:
        items = [_opaque(v, depth) for v in value[:MAX_ITEMS]]
        if len(value) > MAX_ITEMS:
            items.append({MORE: len(value) - MAX_ITEMS})
        return items
    out: dict[str, Any] = {}
    for k, v in islice(value.items(), MAX_KEYS) if len(value) > MAX_KEYS else value.items():
        out[_placeholder(k, out)] = _opaque(v, depth)
    if len(value) > MAX_KEYS:
        out[MORE] = len(value) - MAX_KEYS
    return out


def _placeholder(key: str, out: dict[str, Any]) -> str:
    """`"<N>"` for a key of N characters; `"<N>#2"`, ... when `out` has that one already."""
    return numbered(f"<{len(key)}>", out)


def numbered(name: str, taken: Container[str]) -> str:
    """`name`, or the first of `name#2`, `name#3`, ... that `taken` does not hold: an object
    keeps its number of keys when several are written alike."""
    if name in taken:
        n = 2
        while f"{name}#{n}" in taken:
            n += 1
        name = f"{name}#{n}"
    return name


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
# Protocol fields' values are its vocabulary: few distinct per upstream, so what was decided
# about them is remembered (bounded: an upstream may send endless new ones).
_WORDS: dict[str, bool] = {}  # a protocol field's value -> kept as it is
_MAX_WORDS = 1024


def event_name(name: str) -> str:
    """An `event:` line's name as a skeleton shows it: a protocol word, else its length."""
    return name if is_protocol_word(name) else text_length(name)


def skeleton(event: Event) -> str:
    """One frame's skeleton, as compact JSON text (what the audit holds: orjson's own bytes
    keep a 4 KiB buffer, the decoded text is exactly its length)."""
    name = event.event
    doc: dict[str, Any] = {"bytes": len(event.data)}
    if name:  # absent when the frame had no `event:` line (most frames): held per stream
        doc["event"] = event_name(name)
    data = event.data
    if event.unread:  # too large to read: its size alone (a replay makes one as large)
        doc["bytes"], doc["raw"], doc["unread"] = event.unread, True, True
        if data and not name:  # the `"type"` its data began with, where no `event:` line named it
            doc["type"] = event_name(data.decode("ascii"))
    elif is_done(data):
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
