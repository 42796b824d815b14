"""`sse-audit-proxy evidence-to-case`: an incident becomes a regression test in one step.

An evidence file (`GET /streams/{trace_id}/evidence`, or a `stream_evidence` log line's
`evidence`) is turned into a conformance case (tests/unit/conformance/cases/NAME.json and
streams/NAME.sse): the same frames in the same order, of the same kinds and sizes, each
rebuilt from its skeleton with placeholder text of the recorded length, and the recorded
arrival times of the reads, so the replay reproduces the verdict, timing anomalies included.

Frames past the timeline's exact part are rebuilt from their group (count and kinds); frames
without a skeleton of their own take the first skeleton of the same kind.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import re
import sys
from typing import Any

import orjson

from sse_audit_proxy.core.audit import End, StreamAudit
from sse_audit_proxy.core.dialects import (
    CONTENT,
    ERROR,
    FINISH,
    KEEPALIVE,
    MALFORMED,
    TERMINAL,
    USAGE,
    dialect_for_route,
    route_for_path,
)
from sse_audit_proxy.core.skeleton import KEY_PLACEHOLDER, PLACEHOLDER
from sse_audit_proxy.core.timeline import kind_bits, kind_name

KEEPALIVE_COMMENT = b": keep-alive\n\n"
DONE_FRAME = b"data: [DONE]\n\n"
_NAME = re.compile(r"[^A-Za-z0-9_-]+")
# The order in which the kinds OR-ed into one group are laid out again: content first, then
# whatever ends a stream.
_LATER_BITS = (MALFORMED, ERROR, FINISH, USAGE, TERMINAL)


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "evidence-to-case",
        help="turn a stream's evidence file into a conformance case that replays it",
        description="Write tests/unit/conformance/cases/NAME.json and streams/NAME.sse "
        "from an evidence file (GET /streams/{trace_id}/evidence), then replay "
        "the case through the audit to check it gives the recorded verdict.",
    )
    p.add_argument("evidence", metavar="EVIDENCE.json", help="the evidence file ('-': stdin)")
    p.add_argument(
        "--out",
        default="tests/unit/conformance",
        metavar="DIR",
        help="the conformance directory, holding cases/ and streams/ (default: tests/unit/conformance)",
    )
    p.add_argument("--name", default=None, help="the case's name (default: incident_<trace id>)")
    p.add_argument(
        "--force",
        action="store_true",
        help="write the case even when its replay does not reproduce the verdict",
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    try:
        text = sys.stdin.read() if args.evidence == "-" else pathlib.Path(args.evidence).read_text()
        doc = json.loads(text)
    except (OSError, ValueError) as exc:
        print(f"sse-audit-proxy: error: cannot read {args.evidence}: {exc}", file=sys.stderr)
        return 2
    if doc.get("stream") is None or not (doc.get("timeline") or {}).get("frames"):
        print(
            "sse-audit-proxy: error: this evidence has no stream to replay (a request that "
            "was not audited as a stream, or one that brought no frame)",
            file=sys.stderr,
        )
        return 2
    name = args.name or "incident_" + _NAME.sub("_", str(doc.get("trace_id", "unknown")))[:80]
    case, body = to_case(doc, name)
    got = replay(case, body)
    same = got == case["record"]["stream"]
    if not same and not args.force:
        print(
            f"sse-audit-proxy: error: the rebuilt stream does not reproduce the verdict:\n"
            f"  recorded {case['record']['stream']}\n  replayed {got}\n(--force writes it "
            "anyway)",
            file=sys.stderr,
        )
        return 1
    out = pathlib.Path(args.out)
    (out / "cases").mkdir(parents=True, exist_ok=True)
    (out / "streams").mkdir(parents=True, exist_ok=True)
    case_path = out / "cases" / f"{name}.json"
    case_path.write_text(json.dumps(case, indent=2) + "\n")
    (out / "streams" / case["body"]).write_bytes(body)
    verdict = case["record"]["stream"]
    print(
        f"wrote {case_path} and {out / 'streams' / case['body']}: {verdict['outcome']}"
        f"{' ' + ', '.join(verdict['anomalies']) if verdict['anomalies'] else ''}"
        f" ({'reproduced' if same else 'NOT reproduced'})"
    )
    return 0


def to_case(doc: dict[str, Any], name: str) -> tuple[dict[str, Any], bytes]:
    """The case (JSON document) and its body."""
    request = doc["request"]
    route = request.get("route", "other")
    anomalies = doc["stream"].get("anomalies", [])
    reads = rebuild_reads(doc, "invalid_tool_arguments" not in anomalies, "sequence_gap" not in anomalies)
    if doc["stream"].get("done") and not any(DONE_FRAME in f for _, fs in reads for f in fs):
        _done_last(reads)
    body = b"".join(b"".join(frames) for _, frames in reads)
    stream = dict(doc["stream"])
    if stream.get("unterminated_frame"):
        body += b'data: {"'  # a frame the body ended inside of
        reads.append((reads[-1][0] if reads else 0.0, [b'data: {"']))
    headers = {"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"}
    for header, value in doc.get("response", {}).get("headers", []):
        if header.lower() == "content-type":
            headers["Content-Type"] = value
    shape = request.get("shape") or {}
    req: dict[str, Any] = {
        "model": request.get("model", "unknown"),
        "stream": bool(request.get("stream", True)),
    }
    if request.get("include_usage"):
        req["stream_options"] = {"include_usage": True}
    verdict = doc.get("verdict", {})
    case = {
        "about": f"From the evidence of trace {doc.get('trace_id')} ({doc.get('started_at')}): "
        + "; ".join(verdict.get("reasons") or ["complete"]),
        "path": request.get("path") or "/v1/other",
        "request": req,
        "request_shape": shape,
        "status": doc.get("response", {}).get("status", 200),
        "headers": headers,
        "body": f"{name}.sse",
        # The reads as the proxy saw them: [arrival ms, bytes]; a replay at these times gives
        # the timing anomalies too.
        "timed": [[t, sum(len(f) for f in frames)] for t, frames in reads],
        "end": stream["end"],
        "record": {"route": route, "status": doc.get("response", {}).get("status", 200), "stream": stream},
    }
    return case, body


def rebuild_reads(
    doc: dict[str, Any], valid_arguments: bool = True, in_sequence: bool = True
) -> list[tuple[float, list[bytes]]]:
    """The body's reads: (arrival ms, frames), from the timeline and the skeletons.

    `valid_arguments`: tool-call argument fragments get placeholder text that, per call,
    concatenates to a JSON object (`{   }`), as the recorded stream's arguments did.
    `in_sequence`: Responses' `sequence_number`s are renumbered one by one (frames rebuilt
    from one skeleton would repeat theirs), as the recorded stream's were."""
    frames = doc.get("frames") or []
    by_number = {f["n"]: f for f in frames}
    by_kind: dict[str, dict[str, Any]] = {}
    for f in frames:
        by_kind.setdefault(f["kind"], f)
    reads: list[tuple[float, list[bytes | _Pending]]] = []
    number = 0

    def frame(kind: str) -> bytes | _Pending:
        nonlocal number
        number += 1
        found = by_number.get(number) or by_kind.get(kind)
        if found is None and kind_bits(kind) & KEEPALIVE:
            return KEEPALIVE_COMMENT
        if found is None:  # no skeleton of this kind at all: the closest one that has its bits
            bits = kind_bits(kind)
            found = next((f for f in frames if kind_bits(f["kind"]) & bits), None)
        return KEEPALIVE_COMMENT if found is None else _pending(found["skeleton"], number)

    for row in doc["timeline"]["rows"]:
        t = row[0]
        if len(row) == 2:
            if reads and reads[-1][0] == t:
                reads[-1][1].append(frame(row[1]))
            else:
                reads.append((t, [frame(row[1])]))
            continue
        first, kinds, count, last = row[0], row[1], row[2], row[3]
        for i, kind in enumerate(expand_group(kinds, count)):
            at = first if count <= 1 else first + (last - first) * i / (count - 1)
            reads.append((round(at, 3), [frame(kind)]))
    pending = [f for _, fs in reads for f in fs if isinstance(f, _Pending)]
    if valid_arguments:
        _json_arguments(pending)
    if in_sequence:
        _renumber(pending)
    _final_usage(pending, doc["stream"].get("usage"))
    return [(t, [f if isinstance(f, bytes) else f.encode() for f in fs]) for t, fs in reads]


class _Pending:
    """A rebuilt frame before it is written: its JSON can still be adjusted."""

    __slots__ = ("data", "number", "prefix")

    def __init__(self, prefix: bytes, data: Any, number: int) -> None:
        self.prefix, self.data, self.number = prefix, data, number

    def encode(self) -> bytes:
        return self.prefix + b"data: " + orjson.dumps(self.data) + b"\n\n"


def _pending(skeleton: dict[str, Any], number: int) -> bytes | _Pending:
    frame = materialise(skeleton)
    if not frame.startswith((b"data: {", b"event: ")) or b"data: {" not in frame:
        return frame
    prefix, _, rest = frame.partition(b"data: ")
    return _Pending(prefix, orjson.loads(rest), number)


_ARGUMENT_FIELDS = frozenset({"arguments", "partial_json"})


def _argument_slots(value: Any, key: tuple[Any, ...], root_type: str, found: list[Any]) -> None:
    """Every (container, field, call key) holding tool-call argument text, depth first."""
    if isinstance(value, list):
        for i, item in enumerate(value):
            _argument_slots(item, (*key, i), root_type, found)
        return
    if not isinstance(value, dict):
        return
    here = key + tuple(value[k] for k in ("index", "output_index") if type(value.get(k)) is int)
    for field, item in value.items():
        if isinstance(item, str) and (
            field in _ARGUMENT_FIELDS or (field == "delta" and "arguments" in root_type)
        ):
            # Typed events (Responses) carry fragments only in `delta`: their `arguments` are
            # always a call's whole arguments (`.done`, an output item, the final response).
            whole = bool(root_type) and field == "arguments"
            found.append((value, field, here + (("whole", id(value)) if whole else ())))
        elif isinstance(item, dict | list):
            _argument_slots(item, (*here, field), root_type, found)


def _json_arguments(frames: list[_Pending]) -> None:
    """Placeholder argument text that, call by call, concatenates to `{ ... }`."""
    calls: dict[tuple[Any, ...], list[tuple[dict[str, Any], str]]] = {}
    for f in frames:
        slots: list[Any] = []
        root_type = f.data.get("type") if isinstance(f.data, dict) else None
        _argument_slots(f.data, (), root_type if isinstance(root_type, str) else "", slots)
        for container, field, key in slots:
            calls.setdefault(_call(key), []).append((container, field))
    for parts in calls.values():
        filled = [(c, k) for c, k in parts if c[k]]
        total = sum(len(c[k]) for c, k in filled)
        if total < 2:
            continue
        if len(filled) == 1:
            c, k = filled[0]
            c[k] = "{" + " " * (len(c[k]) - 2) + "}"
            continue
        for i, (c, k) in enumerate(filled):
            n = len(c[k])
            c[k] = "{" + " " * (n - 1) if i == 0 else " " * (n - 1) + "}" if i == len(filled) - 1 else " " * n


def _final_usage(frames: list[_Pending], usage: Any) -> None:
    """The recorded (final) usage in the last frame that carries usage: frames rebuilt from the
    first usage frame's skeleton (continuous usage stats) would all repeat its early counts."""
    if not isinstance(usage, dict):
        return
    for f in reversed(frames):
        data = f.data
        if not isinstance(data, dict):
            continue
        for holder in (data, data.get("response"), data.get("message")):
            if isinstance(holder, dict) and isinstance(holder.get("usage"), dict):
                holder["usage"] = usage
                return


def _done_last(reads: list[tuple[float, list[bytes]]]) -> None:
    """`[DONE]` where the recording had one but no frame kind says so (typed streams, where it
    is not the end marker): it is the last frame after the terminal event."""
    for _, frames in reversed(reads):
        if frames and frames[-1] != KEEPALIVE_COMMENT:
            frames[-1] = DONE_FRAME
            return


def _renumber(frames: list[_Pending]) -> None:
    numbered = [
        f.data for f in frames if isinstance(f.data, dict) and type(f.data.get("sequence_number")) is int
    ]
    for i, data in enumerate(numbered):
        data["sequence_number"] = numbered[0]["sequence_number"] + i if i else data["sequence_number"]


def _call(key: tuple[Any, ...]) -> tuple[Any, ...]:
    """The call a slot belongs to: its index numbers (field names aside), or the whole."""
    return tuple(k for k in key if type(k) is int or isinstance(k, tuple))


def expand_group(kinds: str, count: int) -> list[str]:
    """A group's frames again: as many content (else keep-alive, else `other`) frames as it
    had, with one frame for each other kind it held, at its end."""
    bits = kind_bits(kinds)
    later = [kind_name(b) for b in _LATER_BITS if bits & b]
    base = (
        kind_name(CONTENT) if bits & CONTENT else kind_name(KEEPALIVE) if bits & KEEPALIVE else kind_name(0)
    )
    n = max(count - len(later), 0)
    return [base] * n + later[: count - n]


def materialise(skeleton: dict[str, Any]) -> bytes:
    """One SSE frame from a skeleton: each `"<N>"` becomes N placeholder characters."""
    lines = b""
    if skeleton.get("event"):
        event = skeleton["event"]
        m = PLACEHOLDER.fullmatch(event)
        lines += b"event: " + (b"e" * int(m.group(1)) if m else event.encode()) + b"\n"
    if skeleton.get("raw"):
        return lines + b"data: " + b"?" * max(int(skeleton.get("bytes", 1)), 1) + b"\n\n"
    data = skeleton.get("data")
    if data == "[DONE]":
        return lines + b"data: [DONE]\n\n"
    return lines + b"data: " + orjson.dumps(_fill(data)) + b"\n\n"


def _fill(value: Any) -> Any:
    if isinstance(value, str):
        m = PLACEHOLDER.fullmatch(value)
        return "x" * int(m.group(1)) if m else value
    if isinstance(value, dict):
        return {_fill_key(k): _fill(v) for k, v in value.items() if k != "…more"}
    if isinstance(value, list):
        return [_fill(v) for v in value if not (isinstance(v, dict) and "…more" in v)]
    return value


def _fill_key(key: str) -> str:
    """A placeholder key's characters: the k-th key of one length ("<N>#k") ends in k, so
    the keys of an object stay distinct, as they were."""
    m = KEY_PLACEHOLDER.fullmatch(key)
    if m is None:
        return key
    size, nth = int(m.group(1)), m.group(2) or ""
    return nth.rjust(size, "x")[-size:] if size else ""


def replay(case: dict[str, Any], body: bytes) -> dict[str, Any] | None:
    """The case through the pure audit, each read at its recorded time: what it reproduces."""
    path = case["path"]
    audit = StreamAudit(
        dialect_for_route(route_for_path(path))(),
        0.0,
        include_usage=bool(case["request"].get("stream_options", {}).get("include_usage")),
        event_stream=case["headers"]["Content-Type"].startswith("text/event-stream"),
    )
    offset = 0
    for t_ms, size in case["timed"]:
        audit.feed(body[offset : offset + size], t_ms / 1000.0)
        offset += size
    last = case["timed"][-1][0] / 1000.0 if case["timed"] else 0.0
    r = audit.finish(last + 0.001, End(case["end"]))
    return {
        "outcome": r.outcome.value,
        "end": r.end.value,
        "anomalies": list(r.anomalies),
        "frames": r.frames,
        "content_frames": r.content_frames,
        "keepalives": r.keepalives,
        "done": r.done,
        "finish_reasons": r.finish_reasons,
        "usage": r.usage,
        "prompt_tokens": r.prompt_tokens,
        "completion_tokens": r.completion_tokens,
        "tool_calls": r.tool_calls,
        "unterminated_frame": r.unterminated_frame,
    }
