"""The canary share at run time: the percent file, SIGHUP, the guard and its trip.

A sink (like metrics and logs) that feeds finished streams to the pure guard, plus the
little I/O the cutover needs:

- `--canary-percent-file`: re-read on SIGHUP and whenever it changes (polled every half
  second: its content and the identity of the file the path resolves to, so a Kubernetes
  ConfigMap update, which swaps a symlink, is seen like an edit). Content that is not one
  percent sends the canary nothing until it is (a mistyped rollback still rolls back); a file
  that cannot be read for a moment keeps the current share. Either logs
  `canary_percent_rejected` and sets `sse_audit_canary_percent_rejected`.
- the trip: the guard's decision sets the share to 0 at once, logs one `canary_tripped` line
  and, with `--workers`, writes the shared trip file that every worker polls, so each stops
  sending to the canary within a second. A trip lasts until the percent file is written
  again or SIGHUP (the supervisor removes the trip file before it forwards SIGHUP).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
import time
from typing import Any

import orjson
import structlog
from prometheus_client import CollectorRegistry, Gauge

from sse_audit_proxy.core.guard import Guard, GuardSettings, Sample, Trip, first_token_wait, judge
from sse_audit_proxy.core.record import AuditRecord
from sse_audit_proxy.server.canary import CanaryConfig, Router, Side, parse_percent
from sse_audit_proxy.server.failures import failure

POLL_INTERVAL = 0.5  # seconds: a new share applies within a second of the file changing
MAX_PERCENT_FILE = 4096  # bytes: one number and some comments
_log = structlog.get_logger("sse_audit_proxy")


def build_router(base_url: str, canary: CanaryConfig) -> Router:
    baseline = Side(canary.upstream_name, base_url.rstrip("/"))
    if canary.url is None:
        return Router(baseline)
    return Router(
        baseline,
        Side(canary.canary_name, canary.url.rstrip("/")),
        canary.percent,
        sticky_header=canary.sticky_header,
        side_header=canary.side_header,
    )


class EmptyPercentFile(ValueError):
    """Not one byte in the file: a write caught between its truncate and its write (`echo 5 >
    FILE`), read again half a second later. (A file of blank lines or comments was written
    so: `# 25` is a rollback by commenting out.)"""


def read_percent_file(path: str) -> tuple[float, str]:
    """(percent, fingerprint). The file holds one number (blank lines and # comments aside).

    Raises OSError (unreadable) or ValueError (not a small regular file holding one percent
    from 0 to 100).
    """
    # Follows symlinks (a ConfigMap's ..data swap included). Non-blocking, and only a regular
    # file is read: opening a FIFO for reading would block the event loop, proxy included,
    # until a writer came; a device could be read without end.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        st = os.fstat(fd)
        # Before open(): a directory opens, then open() raises IsADirectoryError, an OSError,
        # which keeps the share in force (a directory put in the file's place kept 100 %).
        if not stat.S_ISREG(st.st_mode):
            raise ValueError("not a regular file")
        fh = open(fd, "rb")  # noqa: SIM115 (closed by the with below)
    except BaseException:
        os.close(fd)
        raise
    with fh:
        if st.st_size > MAX_PERCENT_FILE:
            raise ValueError(
                f"{st.st_size} bytes: a percent file holds one number (at most {MAX_PERCENT_FILE} bytes)"
            )
        raw = fh.read(MAX_PERCENT_FILE + 1)
    if len(raw) > MAX_PERCENT_FILE:  # it grew after the fstat
        raise ValueError(f"over {MAX_PERCENT_FILE} bytes: a percent file holds one number")
    if not raw:
        raise EmptyPercentFile("expected one percent in the file, found an empty file")
    fingerprint = f"{st.st_dev}:{st.st_ino}:{st.st_mtime_ns}:{raw.hex()}"
    # utf-8-sig: a byte-order mark (what Notepad and PowerShell write) is not part of the value.
    lines = [line.split("#", 1)[0].strip() for line in raw.decode("utf-8-sig").splitlines()]
    values = [line for line in lines if line]
    if len(values) != 1:
        raise ValueError(f"expected one percent in the file, found {len(values)} values")
    return parse_percent(values[0]), fingerprint


class CanaryControl:
    """Owns the share in force: the router reads it, this sets it."""

    def __init__(
        self, router: Router, config: CanaryConfig, registry: CollectorRegistry, state_file: str | None = None
    ) -> None:
        self.router = router
        self.config = config
        self.state_file = state_file  # --workers: the trip shared by every worker
        self.guard = Guard(
            GuardSettings(
                config.guard_window,
                config.guard_margin,
                config.guard_min_streams,
                config.guard_ttft_ratio,
                config.guard_ttft_floor,
            )
        )
        self._guarding = config.guard and router.canary is not None
        self._generation = "flag"  # what the operator last said; a trip belongs to one
        self._seen: str | None = None  # fingerprint of the percent file last read well
        self._rejected: str | None = None  # why it was last refused, until it reads well again
        self._task: asyncio.Task[None] | None = None
        self.last_trip: Trip | None = None  # for the demo's live view
        self.tripped_at: float | None = None  # wall clock, comparable with records' started_at
        self.percent_gauge = Gauge(
            "sse_audit_canary_percent",
            "Share of new requests sent to the canary now, in percent (0 while tripped or without a canary).",
            registry=registry,
            multiprocess_mode="livemostrecent",
        )
        self.tripped_gauge = Gauge(
            "sse_audit_canary_tripped",
            "1 while the canary guard has stopped the canary.",
            registry=registry,
            multiprocess_mode="livemax",
        )
        self.rejected_gauge = Gauge(
            "sse_audit_canary_percent_rejected",
            "1 while the canary percent file cannot be taken (the log line canary_percent_rejected "
            "says why): with content that is not one percent the canary gets nothing.",
            registry=registry,
            multiprocess_mode="livemax",
        )
        info = Gauge(
            "sse_audit_upstream_info",
            "1 for each configured side: its `upstream` label value "
            "and its role (baseline or canary), so rules can compare sides whatever their names.",
            ("upstream", "role"),
            registry=registry,
            multiprocess_mode="livemax",
        )
        info.labels(router.baseline.name, "baseline").set(1)
        if router.canary is not None:
            info.labels(router.canary.name, "canary").set(1)
        if config.percent_file is not None:
            try:  # serve refused an unreadable file at start-up; a value it cannot take is
                percent, self._seen = read_percent_file(config.percent_file)
            except (ValueError, UnicodeDecodeError) as exc:  # refused at run time alike
                percent = 0.0  # no last good value yet: the canary gets nothing until one
                self._rejected = _reason(exc)
                _log.error(
                    "canary_percent_rejected", path=config.percent_file, reason=self._rejected, percent=0.0
                )
            else:
                self._generation = self._seen
            router.set_percent(percent)
        self._follow_shared_trip()  # a worker started after a trip: not even one request
        self._show()

    def _show(self) -> None:
        self.percent_gauge.set(self.router.percent)
        self.tripped_gauge.set(1 if self.router.tripped else 0)
        self.rejected_gauge.set(0 if self._rejected is None else 1)

    def _refuse(self, path: str, exc: BaseException) -> None:
        """The percent file could not be taken. Content that is not one percent is the
        operator's word garbled (a byte-order mark, `echo 0 >>`, the letter O): the canary
        gets nothing until it reads well, so a mistyped rollback still rolls back. A file that
        cannot be read for a moment (descriptors ran out, a move and back), or is empty (a
        write caught between its truncate and its write), keeps the share.
        Said once per reason; the last good read stays the one to compare with, so the same
        file read well again is no new word (it clears no trip)."""
        if not isinstance(exc, (OSError, EmptyPercentFile)):
            self.router.close()
        reason = _reason(exc)
        if reason != self._rejected:
            _log.error("canary_percent_rejected", path=path, reason=reason, percent=self.router.percent)
            self._rejected = reason
        self._show()

    # Operator -------------------------------------------------------------------------

    def reload(self) -> None:
        """SIGHUP: re-read the percent file (if any) and clear a trip. A file it cannot take
        clears no trip (an operator who mistyped a rollback and sent SIGHUP to apply it sent
        the bad canary its share back): content that is not one percent gives the canary
        nothing, a file that cannot be read keeps the share (see _refuse)."""
        percent = self.router.configured_percent
        if self.config.percent_file is not None:
            try:
                percent, self._seen = read_percent_file(self.config.percent_file)
            except (OSError, ValueError, UnicodeDecodeError) as exc:
                self._rejected = None  # said again: the operator asked
                self._refuse(self.config.percent_file, exc)
                return
            self._rejected = None
        # Every worker derives the same generation (the supervisor removed the trip file).
        self._generation = self._seen or "flag"
        self._apply(percent, "sighup")

    def _apply(self, percent: float, source: str) -> None:
        before, was_tripped = self.router.percent, self.router.tripped
        self.router.set_percent(percent)
        self.guard.reset()
        self.last_trip = self.tripped_at = None
        self._show()
        _log.info(
            "canary_percent_changed",
            source=source,
            percent=self.router.percent,
            previous_percent=before,
            trip_cleared=was_tripped,
            upstream=self.router.canary.name if self.router.canary else None,
        )

    def poll(self) -> None:
        """One look at the percent file and the shared trip file."""
        path = self.config.percent_file
        if path is not None:
            try:
                percent, fingerprint = read_percent_file(path)
            except (OSError, ValueError, UnicodeDecodeError) as exc:
                self._refuse(path, exc)
            else:
                if fingerprint != self._seen:
                    self._rejected = None
                    self._seen = self._generation = fingerprint
                    self._apply(percent, "file")
                elif self._rejected is not None:  # the file it last took, back as it was
                    self._rejected = None
                    self.router.close(False)
                    self._show()
        self._follow_shared_trip()

    async def watch(self) -> None:
        while True:
            await asyncio.sleep(POLL_INTERVAL)
            try:
                self.poll()
            except Exception as exc:  # the watcher must outlive any surprise
                _log.error("canary_poll_failed", **failure(exc))

    def start(self) -> None:
        if self.router.canary is not None:
            self._task = asyncio.get_running_loop().create_task(self.watch())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    # The trip -------------------------------------------------------------------------

    def _follow_shared_trip(self) -> None:
        if self.state_file is None or self.router.tripped:
            return
        try:
            with open(self.state_file, "rb") as fh:
                state = orjson.loads(fh.read())
        except (OSError, ValueError):
            return
        if state.get("generation") == self._generation:
            self.router.trip()
            self.tripped_at = time.time()
            self._show()
            _log.warning(
                "canary_trip_followed",
                rule=state.get("rule"),
                upstream=self.router.canary.name if self.router.canary else None,
            )

    def _trip(self, trip: Trip) -> None:
        before = self.router.percent
        self.router.trip()  # first: the very next request goes to the baseline
        self.tripped_at = time.time()
        self.last_trip = trip
        self._show()
        canary = self.router.canary
        _log.warning(
            "canary_tripped",
            rule=trip.rule,
            threshold=trip.threshold,
            upstream=canary.name if canary else None,
            previous_percent=before,
            baseline=trip.baseline,
            canary=trip.canary,
            trace_ids=trip.trace_ids,
        )
        if self.state_file is not None:
            _write_atomically(
                self.state_file,
                orjson.dumps({"generation": self._generation, "rule": trip.rule, "pid": os.getpid()}),
            )

    # Sink hooks -----------------------------------------------------------------------

    def stream_started(self, rec: AuditRecord) -> None:
        pass

    def stream_ended(self, rec: AuditRecord) -> None:
        pass

    def record(self, rec: AuditRecord) -> None:
        s = rec.stream
        if not self._guarding or s is None:
            return
        canary = self.router.canary
        assert canary is not None
        on_canary = rec.upstream == canary.name
        if on_canary and self.router.tripped:
            return  # (the baseline's go on: a trip cleared later compares with its fresh ones)
        bad = judge(rec)
        if bad is None:
            return
        # The time it is judged: the two sides are compared over the same stretch of it.
        sample = Sample(rec.trace_id, bad, s.ttft, time.monotonic(), first_token_wait(rec))
        trip = self.guard.observe(on_canary, sample)
        if trip is not None and not self.router.tripped:
            self._trip(trip)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError):
        return exc.strerror or type(exc).__name__
    return str(exc)


def _write_atomically(path: str, data: bytes) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except OSError as exc:
        _log.error("canary_trip_not_shared", path=path, reason=_reason(exc))


def describe(router: Router) -> dict[str, Any]:
    """The sides for the start-up log line (the operator's own configuration, not a label)."""
    if router.canary is None:
        return {}
    return {
        "canary": router.canary.base,
        "canary_name": router.canary.name,
        "upstream_name": router.baseline.name,
        "canary_percent": router.percent,
    }
