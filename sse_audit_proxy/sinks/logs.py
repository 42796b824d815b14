"""One structured log line per audited stream (`stream_end`) or other request (`request_end`),
and the evidence of every stream that went wrong (`stream_evidence`).

structlog, configured once at start-up: a short processor chain ending in orjson (or a
console renderer for people). Only the trace ID, labels, timings, counts and shapes are
logged: never a request header value, prompt or completion text. The upstream's response
headers appear only inside `stream_evidence`, secret-named ones blanked (evidence.py).
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import logging
import os
import sys
import time
from collections.abc import Callable, Iterable, MutableMapping
from typing import Any, cast

import orjson
import structlog

from sse_audit_proxy.core.figures import ms
from sse_audit_proxy.core.record import AuditRecord
from sse_audit_proxy.sinks import evidence
from sse_audit_proxy.sinks.line_writer import LineWriter
from sse_audit_proxy.sinks.redaction import Redactor

LOG_FORMATS = ("json", "console")
FLUSH_SECONDS = 5.0  # how long an exit waits for a stalled log reader to take the last lines


_writer: LineWriter | None = None  # serve's stdout, once configure_logging started one


def configure_logging(
    fmt: str = "json", secret_headers: Iterable[str] = (), buffer_bytes: int | None = None
) -> None:
    """`buffer_bytes`: lines go to stdout from a thread, through a buffer of at most that many
    bytes (line_writer.py: `serve`, where a stalled log reader must not hold a stream); None:
    straight to stdout (the demo and the tools, whose output is read as it is printed)."""
    redact = Redactor(secret_headers)
    stamp: list[Any] = [
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    text_out: Any = sys.stdout
    bytes_out: Any = sys.stdout.buffer
    if buffer_bytes is not None:
        text_out = bytes_out = _start_writer(fmt, buffer_bytes)
    # Exceptions are rendered to text first so the redactor sees (and scrubs) them too.
    tail: list[Any] = [structlog.processors.format_exc_info, redact]
    if fmt == "console":
        last: list[Any] = [*tail, structlog.dev.ConsoleRenderer(colors=sys.stdout.isatty())]
        factory: Any = structlog.WriteLoggerFactory(text_out)  # the line and its end in one write
    else:
        last = [structlog.processors.format_exc_info, RedactedJSON(redact)]
        factory = structlog.BytesLoggerFactory(bytes_out)
    structlog.configure(
        processors=[structlog.contextvars.merge_contextvars, *stamp, *last],
        logger_factory=factory,
        wrapper_class=structlog.make_filtering_bound_logger(0),
        cache_logger_on_first_use=True,
    )
    _route_stdlib_logging(stamp, tail, fmt, text_out)


def _start_writer(fmt: str, buffer_bytes: int) -> LineWriter:
    global _writer
    if _writer is not None:  # configured again (tests): the old one's lines first
        _writer.close(FLUSH_SECONDS)
    _writer = LineWriter(sys.stdout.fileno(), buffer_bytes, functools.partial(_dropped_line, fmt))
    return _writer


def _dropped_line(fmt: str, count: int) -> bytes:
    """The line the writer adds when it caught up after dropping `count` lines."""
    stamp = datetime.datetime.now(datetime.UTC).isoformat().replace("+00:00", "Z")
    if fmt == "console":
        return f"{stamp} [warning  ] log_lines_dropped              dropped={count}\n".encode()
    line = {"dropped": count, "event": "log_lines_dropped", "level": "warning", "timestamp": stamp}
    return orjson.dumps(line) + b"\n"


def share_output(lock_path: str) -> None:
    """`--workers`: the processes write to one stdout, each line whole under a lock of the file
    at `lock_path` (LineWriter.share)."""
    if _writer is not None:
        _writer.share(os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600))


def on_dropped_line(hook: Callable[[str], None]) -> None:
    """Call `hook(reason)` for each log line the writer drops (the metrics count them)."""
    if _writer is not None:
        _writer.on_drop = hook


def flush_logs(timeout: float = FLUSH_SECONDS) -> None:
    """At exit: write out the buffered lines, waiting at most `timeout` for a stalled reader.
    Lines left unwritten are counted on stderr: the metrics that counted drops end with the
    process, and nothing else said that records were lost (an outside review)."""
    if _writer is not None and (lost := _writer.close(timeout)):
        with contextlib.suppress(OSError, ValueError):
            print(
                f"sse-audit-proxy: {lost} log line(s) were not written to stdout: its reader "
                f"stalled or went away (the last {timeout:g} s at exit included)",
                file=sys.stderr,
                flush=True,
            )


def _route_stdlib_logging(stamp: list[Any], tail: list[Any], fmt: str, out: Any) -> None:
    """Library warnings (aiohttp, asyncio) go through the same chain: same format, redacted."""
    renderer = (
        structlog.dev.ConsoleRenderer(colors=False)
        if fmt == "console"
        else structlog.processors.JSONRenderer(serializer=_json_text)
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *stamp],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *tail, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(logging.WARNING)


class RedactedJSON:
    """The last step of a JSON line: rendered, then searched once for what the redactor looks
    for (Redactor.suspect_line); only a line with such a word is redacted field by field and
    rendered again. Looking at every field was about a quarter of a `stream_end` line's
    instructions (callgrind), and nearly no line has one of the words."""

    __slots__ = ("_redact", "_render")

    def __init__(self, redact: Redactor) -> None:
        self._redact = redact
        self._render = structlog.processors.JSONRenderer(serializer=json_bytes)

    def __call__(self, logger: Any, method: str, event: MutableMapping[str, Any]) -> bytes:
        line = cast(bytes, self._render(logger, method, event))  # orjson's bytes
        if self._redact.suspect_line(line):
            line = cast(bytes, self._render(logger, method, self._redact(logger, method, event)))
        return line


def _json_text(obj: Any, **kwargs: Any) -> str:
    return json_bytes(obj, **kwargs).decode()


def json_bytes(obj: Any, default: Callable[[Any], Any] | None = None) -> bytes:
    """orjson's, and when it refuses a value, the line with that value in words. A str with a
    lone surrogate (a path or a variable's name from the OS: Python keeps bytes that are not
    UTF-8 as surrogates) made every log call raise: a percent file's path with one logged a
    traceback each poll and left a mistyped rollback undone (an outside review)."""
    try:
        return orjson.dumps(obj, default=default)
    except orjson.JSONEncodeError:
        return orjson.dumps(_escaped(obj), default=default or repr)


def _escaped(value: Any) -> Any:
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode()
    if isinstance(value, dict):
        return {_escaped(k) if isinstance(k, str) else str(k): _escaped(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_escaped(v) for v in value]
    if isinstance(value, int) and not -(1 << 63) <= value < 1 << 64:
        return str(value)
    return value


def record_fields(rec: AuditRecord) -> dict[str, Any]:
    """The log line of a record, as a dict (also what `/streams/...` would serve)."""
    fields: dict[str, Any] = {
        "trace_id": rec.trace_id,
        "route": rec.route,
        "method": rec.method,
        "model": rec.model,
        "upstream": rec.upstream,
        "status": rec.status,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(rec.started_at))
        + f".{int(rec.started_at % 1 * 1000):03d}Z",
        "duration_ms": ms(rec.duration),
        "bytes": rec.bytes,
        "ttfb_ms": ms(rec.ttfb),
        "request_sent_ms": ms(rec.request_sent),
    }
    if rec.error:
        fields["error"] = rec.error
    if rec.traceparent is not None:
        fields["otel_trace_id"], fields["otel_span_id"] = rec.traceparent
    if rec.client_retry is not None:
        fields["client_retry"] = rec.client_retry
    if rec.replayed:
        fields["replayed"] = True
    s = rec.stream
    if s is None:
        return fields
    fields.update(
        outcome=s.outcome.value,
        anomalies=list(s.anomalies),
        reasons=list(s.reasons),
        end_reason=s.end.value,
        ttfb_ms=ms(s.ttfb),
        ttft_ms=ms(s.ttft),
        max_gap_ms=ms(s.max_gap),
        quiet_at_end_ms=ms(s.quiet_at_end),
        client_held_ms=ms(s.client_held),
        frames=s.frames,
        content_frames=s.content_frames,
        keepalives=s.keepalives,
        last_keepalive_ms=ms(s.last_keepalive),
        finish_reasons=s.finish_reasons,
        usage=s.usage,
        done=s.done,
        tool_calls=s.tool_calls,
        unterminated_frame=s.unterminated_frame,
    )
    return fields


class LogSink:
    """`stream_end`/`request_end` for every request, and `stream_evidence` (the stream's whole
    evidence, see evidence.py) for every stream that is anomalous or not `complete`: evidence at
    scale with no store of our own, indexed by whatever ships the logs."""

    def __init__(self, secret_headers: Iterable[str] = (), instance: str | None = None) -> None:
        self._log = structlog.get_logger("sse_audit_proxy")
        self._redactor = Redactor(secret_headers)
        self._instance = instance

    def stream_started(self, rec: AuditRecord) -> None:
        pass

    def stream_ended(self, rec: AuditRecord) -> None:
        pass

    def record(self, rec: AuditRecord) -> None:
        event = "request_end" if rec.stream is None else "stream_end"
        fields = record_fields(rec)
        self._log.info(event, **fields)
        if evidence.is_notable(rec):
            doc = evidence.build(rec, fields, self._redactor, self._instance)
            del doc["record"]  # the stream_end line just before has it
            # One level under `evidence`, so an index sees one object per trace ID (its
            # `trace_id` is also top-level, for the queries in docs/operate/logs.md).
            self._log.info(
                "stream_evidence",
                trace_id=rec.trace_id,
                upstream=rec.upstream,  # the side, as in stream_end: a canary's evidence by itself
                outcome=doc["verdict"]["outcome"],
                anomalies=doc["verdict"]["anomalies"],
                evidence=doc,
            )
