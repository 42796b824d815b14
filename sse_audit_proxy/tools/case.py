"""`sse-audit-proxy evidence-to-case`: an incident becomes a regression test in one step.

An evidence file (`GET /streams/{trace_id}/evidence`, or a `stream_evidence` log line's
`evidence`) is turned into a conformance case (tests/unit/conformance/cases/NAME.json and
streams/NAME.sse): the same frames in the same order, of the same kinds and sizes, each
rebuilt from its skeleton with placeholder text of the recorded length, and the recorded
arrival times of the reads, so the replay reproduces the verdict, timing anomalies included.

Frames past the timeline's exact part are rebuilt from their group (count and kinds); frames
without a skeleton of their own take the first skeleton of the same kind.

A 14 KB evidence file can stand for a million frames, so nothing is built per frame up front:
the frames are generated one at a time, once to find what must be adjusted (which call a
tool-argument fragment belongs to, which frame carries the final usage, where `[DONE]` goes),
then again for the replay and again for the write, each frame parsed only when it is one to
adjust. The evidence is checked before anything is built from it: what the proxy never writes
(wrong types, a placeholder longer than a frame can be, group counts that do not add up to the
frame count, more than `--max-frames` frames or `--max-bytes` of body) is refused in one line,
exit 2.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import pathlib
import re
import stat
import sys
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from sse_audit_proxy.cli.options import positive_int, size
from sse_audit_proxy.core.audit import End, StreamAudit, Thresholds, is_json_lines
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
from sse_audit_proxy.core.skeleton import KEY_PLACEHOLDER, PLACEHOLDER, VOCABULARY
from sse_audit_proxy.core.sse import TYPE_NAME
from sse_audit_proxy.core.timeline import kind_bits, kind_name
from sse_audit_proxy.tools.terminal import printable

KEEPALIVE_COMMENT = b": keep-alive\n\n"
DONE_FRAME = b"data: [DONE]\n\n"
_NAME = re.compile(r"[^A-Za-z0-9_-]+")
# The order in which the kinds OR-ed into one group are laid out again: content first, then
# whatever ends a stream.
_LATER_BITS = (MALFORMED, ERROR, FINISH, USAGE, TERMINAL)

# A case is a regression test: 100,000 frames is ~10 MB of body and a few MB of `timed`; a
# longer recorded stream is more likely a flood than a test anyone wants in a repository.
DEFAULT_MAX_FRAMES = 100_000
DEFAULT_MAX_BYTES = 256 << 20
# Placeholder text one frame may ask for: the audit holds no frame above the proxy's
# --max-frame-bytes (1 MiB by default), so a skeleton the proxy wrote asks for far less.
MAX_FRAME_BYTES = 16 << 20
# An evidence file is tens of KiB (skeletons <= 8 Ki characters, head <= 8 KiB, timeline <=
# ~3.4 KiB of rows, the record); pretty-printed, a few times that.
MAX_EVIDENCE_BYTES = 4 << 20
MAX_SKELETONS = 1024  # the proxy keeps the first 2 frames' and the first of each kind's
MAX_DEPTH = 32  # a skeleton is at most 8 levels deep
_UNTERMINATED = b'data: {"'  # a frame the body ended inside of
_ENDS = frozenset(e.value for e in End)


class BadEvidence(ValueError):
    """The evidence is not what the proxy writes: what is wrong, in one line."""


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
    p.add_argument(
        "--name",
        default=None,
        help="the case's name, characters other than letters, digits, _ and - made _ "
        "(default: incident_<trace id>)",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="write the case even when its replay does not reproduce the verdict, or over a "
        "case of the same name",
    )
    p.add_argument(
        "--max-frames",
        type=positive_int,
        default=DEFAULT_MAX_FRAMES,
        metavar="N",
        help="refuse a stream of more frames than this (exit 2)",
    )
    p.add_argument(
        "--max-bytes",
        type=size,
        default=DEFAULT_MAX_BYTES,
        metavar="SIZE",
        help="refuse a stream whose rebuilt body would be larger than this (exit 2)",
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except BadEvidence as exc:
        return _fail(f"{args.evidence}: {exc}")
    except Exception as exc:  # whatever a hostile file sets off: one line, never a traceback
        return _fail(f"cannot turn {args.evidence} into a case: {type(exc).__name__}: {exc}")


def _fail(message: str, status: int = 2) -> int:
    print(f"sse-audit-proxy: error: {printable(message[:1000])}", file=sys.stderr)
    return status


def _run(args: argparse.Namespace) -> int:
    doc = _read(args.evidence)
    if not isinstance(doc, dict):
        raise BadEvidence("not an evidence file (a JSON object)")
    timeline = doc.get("timeline")
    if (
        doc.get("stream") is None
        or not timeline
        or (isinstance(timeline, dict) and not timeline.get("frames"))
    ):
        return _fail(
            "this evidence has no stream to replay (a request that "
            "was not audited as a stream, or one that brought no frame)"
        )
    check(doc, args.max_frames)
    name = case_name(args.name, doc.get("trace_id"))
    out = pathlib.Path(args.out)
    case_path, body_path = out / "cases" / f"{name}.json", out / "streams" / f"{name}.sse"
    taken = next((p for p in (case_path, body_path) if p.exists()), None)
    if taken is not None and not args.force:
        return _fail(f"{taken} exists: --name NAME writes another case, --force overwrites it", 1)
    case, rebuild = to_case(doc, name, args.max_bytes)
    times, sizes = array("d"), array("q")
    got = replay(case, _counted(rebuild.reads(), times, sizes))
    verdict = case["record"]["stream"]
    same = got == verdict
    if not same and not args.force:
        print(
            f"sse-audit-proxy: error: the rebuilt stream does not reproduce the verdict:\n"
            f"  recorded {printable(str(verdict)[:2000])}\n  replayed {got}\n(--force writes it "
            "anyway)",
            file=sys.stderr,
        )
        return 1
    case_path.parent.mkdir(parents=True, exist_ok=True)
    body_path.parent.mkdir(parents=True, exist_ok=True)
    _write(body_path, lambda f: f.writelines(data for _, data in rebuild.reads()), binary=True)
    _write(case_path, lambda f: f.writelines(case_json(case, times, sizes)))
    anomalies = verdict.get("anomalies") or []
    print(
        printable(
            f"wrote {case_path} and {body_path}: {verdict.get('outcome')}"
            f"{' ' + ', '.join(anomalies) if anomalies else ''}"
        )
        + f" ({'reproduced' if same else 'NOT reproduced'})"
    )
    return 0


def _read(source: str) -> Any:
    """The evidence document, from a file of at most MAX_EVIDENCE_BYTES."""
    try:
        if source == "-":
            raw = sys.stdin.buffer.read(MAX_EVIDENCE_BYTES + 1)
        else:
            # Opened without blocking, and only a regular file read: a FIFO held it with nothing
            # said (an outside review).
            with open(os.open(source, os.O_RDONLY | os.O_NONBLOCK), "rb") as f:
                if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                    raise BadEvidence("not a regular file (give - to read standard input)")
                raw = f.read(MAX_EVIDENCE_BYTES + 1)
    except OSError as exc:
        raise BadEvidence(f"cannot read it: {exc.strerror or exc}") from None
    if len(raw) > MAX_EVIDENCE_BYTES:
        raise BadEvidence(
            f"larger than {MAX_EVIDENCE_BYTES >> 20} MiB: not an evidence file (one is tens of KiB)"
        )
    try:
        return json.loads(raw)
    except RecursionError:
        raise BadEvidence("nested too deeply to be an evidence file") from None
    except ValueError as exc:
        raise BadEvidence(f"not JSON: {exc}") from None


def case_name(given: str | None, trace_id: Any) -> str:
    """`given` (or incident_<trace ID>) as a file name: one name, no path."""
    name = _NAME.sub("_", given)[:80] if given else "incident_" + _NAME.sub("_", str(trace_id))[:80]
    if not name:
        raise BadEvidence("--name is empty")
    return name


def _write(path: pathlib.Path, fill: Any, binary: bool = False) -> None:
    """Into a temporary file beside `path`, then over it: no half-written case."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "wb" if binary else "w") as f:
            fill(f)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def _counted(
    reads: Iterable[tuple[float, bytes]], times: array[float], sizes: array[int]
) -> Iterator[tuple[float, bytes]]:
    for t, data in reads:
        times.append(t)
        sizes.append(len(data))
        yield t, data


def case_json(case: dict[str, Any], times: array[float], sizes: array[int]) -> Iterator[str]:
    """The case as indented JSON, `timed` one read a line, written piece by piece."""
    yield "{"
    for i, (key, value) in enumerate(case.items()):
        yield ("," if i else "") + "\n  " + json.dumps(key) + ": "
        if key == "timed":
            yield "[" if len(times) else "[]"
            for j, (t, n) in enumerate(zip(times, sizes, strict=True)):
                yield ("," if j else "") + f"\n    [{json.dumps(t)}, {n}]"
            yield "\n  ]" if len(times) else ""
        else:  # a JSON string holds no raw line feed: each one starts a nested line
            yield json.dumps(value, indent=2).replace("\n", "\n  ")
    yield "\n}\n"


# Checking the evidence ----------------------------------------------------------------------


def _typed(value: Any, kind: type | tuple[type, ...], what: str) -> Any:
    if not isinstance(value, kind) or (isinstance(value, bool) and kind in (int, (int, float))):
        raise BadEvidence(f"{what} is missing or not {_KIND_WORDS.get(kind, 'valid')}")
    return value


_KIND_WORDS: dict[Any, str] = {
    dict: "an object",
    list: "a list",
    str: "a string",
    int: "a whole number",
    (int, float): "a number",
}


def _time(value: Any, what: str) -> float:
    if not math.isfinite(_typed(value, (int, float), what)):
        raise BadEvidence(f"{what} is not a finite number")
    return float(value)


def check(doc: dict[str, Any], max_frames: int) -> None:
    """Refuse, before anything is built from it, evidence the proxy would never have written."""
    request = _typed(doc.get("request"), dict, "request")
    path = request.get("path")
    if path not in (None, "") and not (isinstance(path, str) and path.startswith("/")):
        raise BadEvidence("request.path is not a path")
    if request.get("shape") is not None:
        _typed(request["shape"], dict, "request.shape")
    stream = _typed(doc.get("stream"), dict, "stream")
    if stream.get("end") not in _ENDS:
        raise BadEvidence(f"stream.end is not one of {', '.join(sorted(_ENDS))}")
    for anomaly in _typed(stream.get("anomalies", []), list, "stream.anomalies"):
        _typed(anomaly, str, "an anomaly")
    response = _typed(doc.get("response", {}), dict, "response")
    for pair in _typed(response.get("headers", []), list, "response.headers"):
        if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(p, str) for p in pair)):
            raise BadEvidence("response.headers holds something other than [name, value] pairs")
    status = response.get("status", 200)
    if not 100 <= _typed(status, int, "response.status") <= 599:
        raise BadEvidence("response.status is not an HTTP status")
    reasons = _typed(doc.get("verdict", {}), dict, "verdict").get("reasons")
    for reason in _typed(reasons, list, "verdict.reasons") if reasons is not None else ():
        _typed(reason, str, "a verdict reason")
    try:
        Thresholds.from_changed(doc.get("thresholds", {}))
    except ValueError as exc:
        raise BadEvidence(str(exc)) from None
    _check_timeline(_typed(doc.get("timeline"), dict, "timeline"), max_frames)
    skeletons = _typed(doc.get("frames") or [], list, "frames")
    if len(skeletons) > MAX_SKELETONS:
        raise BadEvidence(f"more than {MAX_SKELETONS} frame skeletons")
    for i, entry in enumerate(skeletons):
        where = f"frames[{i}]"
        _typed(entry, dict, where)
        _typed(entry.get("n"), int, f"{where}.n")
        _typed(entry.get("kind"), str, f"{where}.kind")
        _check_skeleton(_typed(entry.get("skeleton"), dict, f"{where}.skeleton"), where)


def _check_timeline(timeline: dict[str, Any], max_frames: int) -> None:
    frames = _typed(timeline.get("frames"), int, "timeline.frames")
    if frames > max_frames:
        raise BadEvidence(
            f"the stream had {frames:,} frames, more than --max-frames {max_frames:,}: a case "
            "that long is rarely a test worth keeping (raise --max-frames to write it anyway)"
        )
    counted = 0
    for row in _typed(timeline.get("rows"), list, "timeline.rows"):
        if not isinstance(row, list) or len(row) not in (2, 4, 5):
            raise BadEvidence("a timeline row is not [t, kind] or [t, kinds, count, last t, silence]")
        _time(row[0], "a timeline row's time")
        _typed(row[1], str, "a timeline row's kind")
        if len(row) == 2:
            counted += 1
            continue
        count = _typed(row[2], int, "a timeline group's count")
        _time(row[3], "a timeline group's last time")
        if count < 1:
            raise BadEvidence("a timeline group has no frame")
        counted += count
        if counted > frames:
            break
    if counted != frames:
        raise BadEvidence(f"timeline.rows hold {counted:,}+ frames, timeline.frames says {frames:,}")


def _check_skeleton(skeleton: dict[str, Any], where: str) -> None:
    """Each field materialise() reads has its type, the text it asks for fits in a frame."""
    event = skeleton.get("event")
    text = 0
    if event is not None:
        if not isinstance(event, str) or "\n" in event or "\r" in event:
            raise BadEvidence(f"{where}: the event name is not one line of text")
        text += _placeholder(event)
    kind = skeleton.get("type")  # an unread frame's leading type: materialise() writes it
    if kind is not None and not (isinstance(kind, str) and _TYPE_WORD.fullmatch(kind)):
        raise BadEvidence(f"{where}: the type is not a protocol word")
    if skeleton.get("raw"):
        raw = skeleton.get("bytes", 1)
        if not 0 <= _typed(raw, int, f"{where}: a raw frame's bytes") <= MAX_FRAME_BYTES:
            raise BadEvidence(f"{where}: a raw frame of {raw} bytes")
        text += raw
    text += _text_asked(skeleton.get("data"), where)
    if text > MAX_FRAME_BYTES:
        raise BadEvidence(f"{where}: asks for {text:,} bytes of text, more than a frame can hold")


# What an unread frame's type may be (SSEDecoder's leading type), or a placeholder.
_TYPE_WORD = re.compile(rf"{TYPE_NAME}|<\d{{1,3}}>")


def _placeholder(value: str, pattern: re.Pattern[str] = PLACEHOLDER) -> int:
    """The characters a placeholder asks for (a key's, KEY_PLACEHOLDER: `<N>#k` is N too)."""
    m = pattern.fullmatch(value)
    return int(m.group(1)) if m else 0


def _text_asked(data: Any, where: str) -> int:
    """The placeholder text a skeleton's JSON asks for, walked without recursion."""
    total = 0
    stack = [(data, 0)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise BadEvidence(f"{where}: nested deeper than {MAX_DEPTH} levels")
        if isinstance(value, str):
            total += _placeholder(value)
        elif isinstance(value, dict):
            total += sum(_placeholder(k, KEY_PLACEHOLDER) for k in value)
            stack.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value)
        if total > MAX_FRAME_BYTES:
            break
    return total


# Building the case --------------------------------------------------------------------------


def to_case(
    doc: dict[str, Any], name: str, max_bytes: int = DEFAULT_MAX_BYTES
) -> tuple[dict[str, Any], Rebuild]:
    """The case (JSON document, `timed` still to fill) and what rebuilds its body. `doc` has
    passed check()."""
    request = doc["request"]
    route = request.get("route", "other")
    stream = dict(doc["stream"])
    anomalies = stream.get("anomalies", [])
    headers = {"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"}
    for header, value in doc.get("response", {}).get("headers", []):
        if header.lower() == "content-type":
            headers["Content-Type"] = value
    rebuild = Rebuild(
        doc,
        valid_arguments="invalid_tool_arguments" not in anomalies,
        in_sequence="sequence_gap" not in anomalies,
        max_bytes=max_bytes,
        json_lines=is_json_lines(headers["Content-Type"]),
        filler=dialect_for_route(route).replay_filler,
        named_once="repeated_tool_call_fields" not in anomalies,
    )
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
        # the timing anomalies too. Filled by the replay (case_json writes them).
        "timed": [],
        "end": stream["end"],
        "record": {"route": route, "status": doc.get("response", {}).get("status", 200), "stream": stream},
    }
    if doc.get("thresholds"):
        case["thresholds"] = doc["thresholds"]  # the serve flags it was judged by
    return case, rebuild


@dataclass(slots=True, frozen=True)
class _Template:
    """One skeleton, materialised once, and what about it a frame built from it may need
    adjusted."""

    frame: bytes
    json_at: int  # where its JSON starts (after the first `data: `); 0: no JSON to adjust
    # Per tool-argument slot, in _argument_slots order: its call (None: a whole call of its
    # own), and its text's length.
    calls: tuple[tuple[Any, ...] | None, ...]
    lengths: tuple[int, ...]
    numbered: bool  # a top-level integer `sequence_number`
    usage: bool  # carries usage where _final_usage puts the recorded one

    @classmethod
    def of(cls, skeleton: dict[str, Any]) -> _Template:
        frame = materialise(skeleton)
        if not frame.startswith((b"data: {", b"event: ")) or b"data: {" not in frame:
            return cls(frame, 0, (), (), False, False)
        json_at = frame.index(b"data: ") + len(b"data: ")
        data = orjson.loads(frame[json_at:])
        slots = _slots(data)
        return cls(
            frame,
            json_at,
            tuple(None if whole else _call(key) for _, _, key, whole in slots),
            tuple(len(c[f]) for c, f, _, _ in slots),
            isinstance(data, dict) and type(data.get("sequence_number")) is int,
            _usage_holder(data) is not None,
        )


class Rebuild:
    """The body of a case, read by read, from the evidence's timeline and skeletons.

    `valid_arguments`: tool-call argument fragments get placeholder text that, per call,
    concatenates to a JSON object (`{   }`), as the recorded stream's arguments did.
    `in_sequence`: Responses' `sequence_number`s are renumbered one by one (frames rebuilt
    from one skeleton would repeat theirs), as the recorded stream's were. The last frame that
    carries usage carries the recorded (final) usage; a recorded `[DONE]` that no frame kind
    brings back is put last.

    Nothing per frame is kept: __init__ walks the frames once to learn, per call, how many
    argument fragments it has and their length, and which frames take the final usage and
    `[DONE]`; reads() generates the frames again, each time it is iterated."""

    def __init__(
        self,
        doc: dict[str, Any],
        valid_arguments: bool,
        in_sequence: bool,
        max_bytes: int,
        json_lines: bool = False,
        filler: dict[str, Any] | None = None,
        named_once: bool = False,
    ) -> None:
        self._json_lines = json_lines  # the body is JSON lines: each frame written as its line
        # The dialect's order-neutral frame for one of kind `other` without a skeleton of its
        # own (Dialect.replay_filler), rather than the first `other` (Responses' created).
        self._filler = None if filler is None else _Template.of(filler)
        # A Chat tool call's id and name come in its first delta only, unless the recorded
        # stream repeated them (`repeated_tool_call_fields`): a frame rebuilt from a skeleton
        # not its own that names a call is rebuilt as a continuation (_continued).
        self._named_once = named_once
        self._continued: dict[int, _Template] = {}
        self._rows: list[list[Any]] = doc["timeline"]["rows"]
        self._skeletons: list[dict[str, Any]] = doc.get("frames") or []
        self._by_number = {f["n"]: i for i, f in enumerate(self._skeletons)}
        self._by_kind: dict[str, int] = {}
        for i, f in enumerate(self._skeletons):
            self._by_kind.setdefault(f["kind"], i)
        self._templates: dict[int, _Template] = {}
        self._closest: dict[int, int | None] = {}  # kind bits -> the first skeleton with some
        self._skeleton_bits: list[int] | None = None
        stream = doc["stream"]
        self._valid_arguments, self._in_sequence = valid_arguments, in_sequence
        self._usage = stream.get("usage") if isinstance(stream.get("usage"), dict) else None
        self._unterminated = bool(stream.get("unterminated_frame"))
        self._calls: dict[tuple[Any, ...], tuple[int, int]] = {}  # per call: fragments, length
        self._usage_at = self._done_at = 0  # frame numbers (0: none)
        self._plan(bool(stream.get("done")), max_bytes)

    def _source(self, number: int, kind: str) -> bytes | _Template:
        """Frame `number`, of `kind`: its own skeleton, else its kind's, else the closest."""
        i = self._by_number.get(number)
        own = i is not None and bool(self._skeletons[i])
        if not own and self._filler is not None and kind_bits(kind) == 0:
            return self._filler
        if not own:
            i = self._by_kind.get(kind)
        if i is None and kind_bits(kind) & KEEPALIVE:
            return KEEPALIVE_COMMENT
        if i is None:  # no skeleton of this kind at all: the first one that has its bits
            bits = kind_bits(kind)  # (by bits: kinds spelled many ways made this quadratic)
            if bits not in self._closest:
                if self._skeleton_bits is None:
                    self._skeleton_bits = [kind_bits(f["kind"]) for f in self._skeletons]
                self._closest[bits] = next((j for j, b in enumerate(self._skeleton_bits) if b & bits), None)
            i = self._closest[bits]
            if i is None:
                return KEEPALIVE_COMMENT
        template = self._templates.get(i)
        if template is None:
            template = self._templates[i] = _Template.of(self._skeletons[i]["skeleton"])
        return template if own else self._continuation(i, template)

    def _continuation(self, i: int, template: _Template) -> _Template:
        """`template` (skeleton i) for a later frame: a Chat tool call named in it is not named
        again (its `id`, `type`, `function.name`; but with `repeated_tool_call_fields`), and
        its empty arguments get a character, so that the frame stays content and an argument
        fragment, as the recorded one was."""
        continued = self._continued.get(i)
        if continued is None:
            data = orjson.loads(template.frame[template.json_at :]) if template.json_at else None
            if not _continue_calls(data, self._named_once):
                continued = template
            else:
                skeleton = {**self._skeletons[i]["skeleton"], "data": data}
                continued = _Template.of(skeleton)
            self._continued[i] = continued
        return continued

    def _frames(self) -> Iterator[tuple[float, bool, int, bytes | _Template]]:
        """Each frame: (arrival ms, whether it came in the read before's, number, source)."""
        number = 0
        last: float | None = None
        for row in self._rows:
            t = row[0]
            if len(row) == 2:
                number += 1
                yield t, t == last, number, self._source(number, row[1])
                last = t
                continue
            first, kinds, count, end = row[0], row[1], row[2], row[3]
            for i, kind in enumerate(group_kinds(kinds, count)):
                at = round(first if count <= 1 else first + (end - first) * i / (count - 1), 3)
                number += 1
                yield at, False, number, self._source(number, kind)
                last = at

    def _plan(self, done: bool, max_bytes: int) -> None:
        size = 0
        calls = self._calls
        has_done = False
        read_last: bytes | _Template = b""
        read_last_number = 0
        for _, joins, number, source in self._frames():
            if not joins and isinstance(read_last, _Template):
                self._done_at = read_last_number  # the last read that ends in a frame so far
            read_last, read_last_number = source, number
            if isinstance(source, bytes):
                size += len(source)
                continue
            size += len(source.frame)
            has_done = has_done or DONE_FRAME in source.frame
            if source.usage:
                self._usage_at = number
            for call, length in zip(source.calls, source.lengths, strict=True):
                if call is not None and length:
                    fragments, total = calls.get(call, (0, 0))
                    calls[call] = (fragments + 1, total + length)
            if size > max_bytes:
                raise BadEvidence(
                    f"the rebuilt body would be larger than --max-bytes {max_bytes:,} "
                    "(raise it to write it anyway)"
                )
        if isinstance(read_last, _Template):
            self._done_at = read_last_number
        if not done or has_done:
            self._done_at = 0
        if self._usage is None:
            self._usage_at = 0

    def reads(self) -> Iterator[tuple[float, bytes]]:
        """The body's reads: (arrival ms, bytes), in order."""
        seen: dict[tuple[Any, ...], int] = {}  # per call: fragments placed so far
        sequence: list[int] = []  # the first sequence number, the count renumbered
        at = 0.0
        frames: list[bytes] = []
        for t, joins, number, source in self._frames():
            if not joins:
                if frames:
                    yield at, b"".join(frames)
                    frames.clear()
                at = t
            frame = source if isinstance(source, bytes) else self._adjusted(number, source, seen, sequence)
            frame = DONE_FRAME if number == self._done_at else frame
            frames.append(_as_line(frame) if self._json_lines else frame)
        if frames:
            yield at, b"".join(frames)
        if self._unterminated:
            yield at, _as_line(_UNTERMINATED)[:-1] if self._json_lines else _UNTERMINATED

    def _adjusted(
        self, number: int, template: _Template, seen: dict[tuple[Any, ...], int], sequence: list[int]
    ) -> bytes:
        arguments = self._valid_arguments and any(template.lengths)  # empty text stays empty
        renumber = self._in_sequence and template.numbered
        if not (arguments or renumber or number == self._usage_at):
            return template.frame
        data = orjson.loads(template.frame[template.json_at :])
        if arguments:
            self._place_arguments(data, seen)
        if renumber:
            if sequence:
                data["sequence_number"] = sequence[0] + sequence[1]
                sequence[1] += 1
            else:
                sequence += [data["sequence_number"], 1]
        if number == self._usage_at:
            holder = _usage_holder(data)
            assert holder is not None
            holder["usage"] = self._usage
        return template.frame[: template.json_at] + orjson.dumps(data) + b"\n\n"

    def _place_arguments(self, data: Any, seen: dict[tuple[Any, ...], int]) -> None:
        """Placeholder argument text that, call by call, concatenates to `{ ... }`."""
        for container, field, key, whole in _slots(data):
            n = len(container[field])
            if whole:
                if n >= 2:
                    container[field] = "{" + " " * (n - 2) + "}"
                continue
            call = _call(key)
            fragments, total = self._calls.get(call, (0, 0))
            if not n or total < 2:
                continue
            i = seen.get(call, 0)
            seen[call] = i + 1
            if fragments == 1:
                container[field] = "{" + " " * (n - 2) + "}"
            elif i == 0:
                container[field] = "{" + " " * (n - 1)
            else:
                container[field] = " " * (n - 1) + "}" if i == fragments - 1 else " " * n


_ARGUMENT_FIELDS = frozenset({"arguments", "partial_json"})


def _continue_calls(data: Any, unname: bool) -> bool:
    """A Chat delta's tool calls that are named (an `id` or `function.name`) as a later
    piece of each: their `id`, `type` and name taken out (`unname`), an empty `arguments`
    given one character. Whether there was one."""
    found = False
    choices = data.get("choices") if isinstance(data, dict) else None
    for choice in choices if isinstance(choices, list) else ():
        delta = choice.get("delta") if isinstance(choice, dict) else None
        calls = delta.get("tool_calls") if isinstance(delta, dict) else None
        for call in calls if isinstance(calls, list) else ():
            if not isinstance(call, dict):
                continue
            function = call.get("function")
            named = bool(call.get("id") or (isinstance(function, dict) and function.get("name")))
            if not named:
                continue
            found = True
            if unname:
                call.pop("id", None)
                call.pop("type", None)
            if isinstance(function, dict):
                if unname:
                    function.pop("name", None)
                if function.get("arguments") == "":
                    function["arguments"] = " "
    return found


def _slots(data: Any) -> list[tuple[dict[str, Any], str, tuple[Any, ...], bool]]:
    """Every (container, field, key, whole call) holding tool-call argument text."""
    found: list[tuple[dict[str, Any], str, tuple[Any, ...], bool]] = []
    root_type = data.get("type") if isinstance(data, dict) else None
    _argument_slots(data, (), root_type if isinstance(root_type, str) else "", found)
    return found


def _argument_slots(
    value: Any,
    key: tuple[Any, ...],
    root_type: str,
    found: list[tuple[dict[str, Any], str, tuple[Any, ...], bool]],
) -> None:
    """Every slot holding tool-call argument text, depth first."""
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
            found.append((value, field, here, bool(root_type) and field == "arguments"))
        elif isinstance(item, dict | list):
            _argument_slots(item, (*here, field), root_type, found)


def _usage_holder(data: Any) -> dict[str, Any] | None:
    """Where a frame carries usage: the frame, its `response` or its `message`."""
    if not isinstance(data, dict):
        return None
    for holder in (data, data.get("response"), data.get("message")):
        if isinstance(holder, dict) and isinstance(holder.get("usage"), dict):
            return holder
    return None


def _call(key: tuple[Any, ...]) -> tuple[Any, ...]:
    """The call a slot belongs to: its index numbers (field names aside)."""
    return tuple(k for k in key if type(k) is int)


def group_kinds(kinds: str, count: int) -> Iterator[str]:
    """A group's frames again: as many content (else keep-alive, else `other`) frames as it
    had, with one frame for each other kind it held, at its end."""
    bits = kind_bits(kinds)
    later = [kind_name(b) for b in _LATER_BITS if bits & b]
    base = (
        kind_name(CONTENT) if bits & CONTENT else kind_name(KEEPALIVE) if bits & KEEPALIVE else kind_name(0)
    )
    n = max(count - len(later), 0)
    return itertools.chain(itertools.repeat(base, n), later[: count - n])


def _as_line(frame: bytes) -> bytes:
    """An SSE frame of one `data:` line as the JSON line it stands for."""
    data = frame.rpartition(b"data: ")[2] if b"data: " in frame else frame
    return data.rstrip(b"\n") + b"\n"


def materialise(skeleton: dict[str, Any]) -> bytes:
    """One SSE frame from a skeleton: each `"<N>"` becomes N placeholder characters."""
    lines = b""
    if skeleton.get("event"):
        event = skeleton["event"]
        m = PLACEHOLDER.fullmatch(event)
        lines += b"event: " + (b"e" * int(m.group(1)) if m else event.encode()) + b"\n"
    if skeleton.get("raw"):
        size = max(int(skeleton.get("bytes", 1)), 1)
        kind = skeleton.get("type")
        if isinstance(kind, str) and not PLACEHOLDER.fullmatch(kind):  # an unread frame's type
            head = b'{"type":"%s","data":"' % kind.encode()  # (a field name: the scan of keys)
            return lines + b"data: " + head + b"?" * max(size - len(head) - 2, 1) + b'"}\n\n'
        return lines + b"data: " + b"?" * size + b"\n\n"
    data = skeleton.get("data")
    if data == "[DONE]":
        return lines + b"data: [DONE]\n\n"
    return lines + b"data: " + orjson.dumps(_fill(data)) + b"\n\n"


def _fill(value: Any, key: str | None = None) -> Any:
    if isinstance(value, str):
        m = PLACEHOLDER.fullmatch(value)
        if m is None:
            return value
        # A protocol field's text became a placeholder only because it was no protocol word
        # (`"max tokens"`): it is replayed as none either, so the audit reads it as it did.
        return ("?" if key in VOCABULARY else "x") * int(m.group(1))
    if isinstance(value, dict):
        return {_fill_key(k): _fill(v, k) for k, v in value.items() if k != "…more"}
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


def replay(case: dict[str, Any], reads: Iterable[tuple[float, bytes]]) -> dict[str, Any]:
    """The case through the pure audit, each read at its recorded time: what it reproduces."""
    path = case["path"]
    audit = StreamAudit(
        dialect_for_route(route_for_path(path))(),
        0.0,
        include_usage=bool(case["request"].get("stream_options", {}).get("include_usage")),
        event_stream=case["headers"]["Content-Type"].startswith("text/event-stream"),
        json_lines=is_json_lines(case["headers"]["Content-Type"]),
        thresholds=Thresholds.from_changed(case.get("thresholds", {})),
    )
    last = 0.0
    for t_ms, data in reads:
        last = t_ms / 1000.0
        audit.feed(data, last)
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
