"""What the audit needs to know about a request, read without changing it."""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass

import orjson

MAX_TRACE_ID = 128
MAX_MODEL = 128
UNKNOWN_MODEL = "unknown"
_UNSAFE = re.compile(r"[^A-Za-z0-9._:/@+=-]")
TRACE_HEADERS = ("X-Client-Request-Id", "X-Request-Id")


MAX_SHAPE_FIELDS = 32
_FIELD = re.compile(r"[A-Za-z0-9_.-]{1,64}")


@dataclass(slots=True, frozen=True)
class RequestInfo:
    model: str = UNKNOWN_MODEL
    stream: bool = False
    include_usage: bool = False
    # The request's shape, for evidence (never its text): each top-level field's name with its
    # value when it is a number or a boolean (temperature, n, max_tokens, stream), else the
    # size of a list (messages, tools) or null; `stream_options` flattened the same way. As
    # one compact JSON object (it lives as long as the stream: one string is the least memory).
    shape: str = "{}"

    @classmethod
    def from_body(cls, body: bytes) -> RequestInfo:
        """Read `model`, `stream` and `stream_options.include_usage` from a JSON body."""
        if not body or body.lstrip()[:1] != b"{":
            return cls()
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            return cls()
        if not isinstance(doc, dict):
            return cls()
        model = doc.get("model")
        model = safe_token(model, MAX_MODEL) if isinstance(model, str) else ""
        options = doc.get("stream_options")
        return cls(
            model=model or UNKNOWN_MODEL,
            stream=doc.get("stream") is True,
            include_usage=isinstance(options, dict) and options.get("include_usage") is True,
            shape=request_shape(doc),
        )


def _figure(value: object) -> int | float | bool | None:
    if isinstance(value, bool | int | float):
        return value
    return len(value) if isinstance(value, list) else None


def request_shape(doc: dict[str, object]) -> str:
    out: list[tuple[str, int | float | bool | None]] = []
    for key, value in doc.items():
        if len(out) >= MAX_SHAPE_FIELDS:
            break
        if not _FIELD.fullmatch(key):
            continue
        if isinstance(value, dict) and key == "stream_options":
            out += [(f"{key}.{k}", _figure(v)) for k, v in list(value.items())[:8]
                    if _FIELD.fullmatch(k)]
        else:
            out.append((key, _figure(value)))
    return orjson.dumps(dict(out)).decode()


def safe_token(value: str, limit: int) -> str:
    """Restrict a client-supplied string to a safe character set and length for logs/labels."""
    return _UNSAFE.sub("", value[: limit * 4])[:limit]


def trace_id_from(headers: Mapping[str, str]) -> tuple[str, bool]:
    """The client's trace ID (sanitised), and whether it came from the client at all."""
    for name in TRACE_HEADERS:
        value = headers.get(name)
        if value:
            cleaned = safe_token(value, MAX_TRACE_ID)
            if cleaned:
                return cleaned, True
    return uuid.uuid4().hex, False
