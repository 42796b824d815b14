"""Real streams with hostile values put anywhere in their frames, through the audit and every
sink: the stream_end line, the evidence and the metrics.

What an upstream sends is data, not trusted shape: any field may hold a deep object, a huge
or negative number, a long string or text. For every such stream the sinks must work (no
exception: an exception loses the stream's line, or its metrics), stay bounded (a log line
stays a line) and carry no text of the frames. Every string put in carries a marker with a
space, which no protocol word has; it must appear in none of the outputs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
from hypothesis import given
from hypothesis import strategies as st
from hypothesis_budget import budget
from prometheus_client import CollectorRegistry, generate_latest

from sse_audit_proxy.core.audit import End, StreamAudit
from sse_audit_proxy.core.dialects import dialect_for_route
from sse_audit_proxy.core.record import AuditRecord
from sse_audit_proxy.sinks import evidence
from sse_audit_proxy.sinks.logs import record_fields
from sse_audit_proxy.sinks.metrics import Metrics
from sse_audit_proxy.sinks.redaction import Redactor

STREAMS = Path(__file__).parent / "conformance" / "streams"
ROUTES = {
    "chat": "chat_completions",
    "completions": "completions",
    "responses": "responses",
    "messages": "messages",
}
MARKER = "HO STILE"
MAX_LINE = 64 << 10


def _events(path: Path) -> list[tuple[str | None, Any]]:
    """(event name, parsed data) per frame; frames whose data is not JSON keep their text."""
    out: list[tuple[str | None, Any]] = []
    for block in path.read_text().replace("\r\n", "\n").split("\n\n"):
        name, data = None, []
        for line in block.split("\n"):
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].removeprefix(" "))
        if data:
            text = "\n".join(data)
            try:
                out.append((name, json.loads(text)))
            except ValueError:
                out.append((name, text))
    return out


CORPUS = [
    (ROUTES[p.name.split("_")[0]], _events(p))
    for p in sorted(STREAMS.glob("*.sse"))
    if p.name.split("_")[0] in ROUTES
]

_TEXT = st.text(max_size=12).map(lambda t: MARKER + t)
_KEYS = _TEXT | st.sampled_from(["type", "usage", "index", "id", "finish_reason"])
_HOSTILE = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(1 << 70), max_value=1 << 70)
    | st.sampled_from([-1, 0, (1 << 63) - 1, 1 << 63, (1 << 64) - 1, 1 << 64])
    | st.floats(allow_nan=False, allow_infinity=False)
    | _TEXT
    | st.just(MARKER * 3000),  # 24 KB of text
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(_TEXT | st.sampled_from(["type", "usage"]), inner, max_size=3)
    ),
    max_leaves=10,
)


def _deep(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = {"n": value, "total_tokens": 1}
    return value


_ANY = _HOSTILE | st.integers(100, 400).map(_deep)
# Fields the dialects read, anywhere they may be read.
_FIELDS = (
    st.sampled_from(
        [
            "usage",
            "error",
            "finish_reason",
            "stop_reason",
            "tool_calls",
            "choices",
            "delta",
            "response",
            "item",
            "incomplete_details",
            "status",
            "index",
            "output_index",
            "item_id",
            "id",
            "arguments",
            "partial_json",
            "content_block",
            "message",
            "sequence_number",
        ]
    )
    | _TEXT
)


def _paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in a JSON value a hostile value can go (the value itself included)."""
    out = [path]
    if isinstance(value, dict):
        for key, inner in value.items():
            out += _paths(inner, (*path, key))
    elif isinstance(value, list):
        for i, inner in enumerate(value):
            out += _paths(inner, (*path, i))
    return out


def _get(value: Any, path: tuple[Any, ...]) -> Any:
    for step in path:
        value = value[step]
    return value


def _put(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(value, dict):
        return {**value, head: _put(value[head], rest, new)}
    copy = list(value)
    copy[head] = _put(copy[head], rest, new)
    return copy


@st.composite
def hostile_stream(draw: st.DrawFn) -> tuple[str, list[bytes]]:
    route, events = draw(st.sampled_from(CORPUS))
    events = list(events)
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(events) - 1))
        name, data = events[i]
        if not isinstance(data, (dict, list)):
            continue
        path = draw(st.sampled_from(_paths(data)))
        new = draw(_ANY)
        if draw(st.booleans()):  # or a field added to an object: one a dialect reads, or any
            objects = [p for p in _paths(data) if isinstance(_get(data, p), dict)]
            if objects:
                path = draw(st.sampled_from(objects))
                new = {**_get(data, path), draw(_FIELDS): new}
        events[i] = (name, _put(data, path, new))
    frames = []
    for name, data in events:
        text = data if isinstance(data, str) else json.dumps(data)  # any integer, any depth
        head = f"event: {name}\n" if name else ""
        frames.append(f"{head}data: {text}\n\n".encode(errors="surrogatepass"))
    return route, frames


@budget(300)
@given(hostile_stream())
def test_hostile_values_reach_no_sink_as_text_and_break_none(stream: tuple[str, list[bytes]]) -> None:
    route, frames = stream
    audit = StreamAudit(dialect_for_route(route)(), 0.0)
    for i, frame in enumerate(frames):
        audit.feed(frame, 0.01 * (i + 1))
    result = audit.finish(0.01 * (len(frames) + 1), End.UPSTREAM_EOF)
    rec = AuditRecord(
        "trace",
        route,
        "POST",
        "m",
        200,
        1.7e9,
        result.duration,
        result.bytes,
        result,
        response_head=b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n",
    )
    line = orjson.dumps(record_fields(rec))  # what the log renderer writes
    doc = orjson.dumps(evidence.build(rec, record_fields(rec), Redactor()))
    registry = CollectorRegistry()
    Metrics(registry).record(rec)
    exposition = generate_latest(registry)
    for out in (line, doc, exposition):
        assert MARKER.encode() not in out
        assert MARKER.replace(" ", "").encode() not in out  # nor with its space taken out
    assert len(line) < MAX_LINE and len(doc) < MAX_LINE, (len(line), len(doc))
