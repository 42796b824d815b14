"""The demo's live view: a sink that tallies the proxy's audit records, and how to show them.

On a terminal the view is redrawn in place each refresh; elsewhere (a pipe, a CI log) one
plain line is printed per refresh. Memory is bounded: counters, a capped sample of TTFTs,
a capped set of model names, and the last few streams.
"""

from __future__ import annotations

import shutil
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import TextIO

from sse_audit_proxy.cli.format import seconds, table
from sse_audit_proxy.core.audit import Outcome
from sse_audit_proxy.core.figures import percentile
from sse_audit_proxy.core.guard import judge
from sse_audit_proxy.core.record import AuditRecord
from sse_audit_proxy.server.canary_control import CanaryControl
from sse_audit_proxy.sinks.metrics import OTHER, LabelCap
from sse_audit_proxy.tools import scenarios

TTFT_SAMPLES = 10_000
RECENT = 8


@dataclass(slots=True)
class ModelTally:
    n: int = 0
    verdicts: Counter[str] = field(default_factory=Counter)
    checked: int = 0  # streams whose verdict the scenario table predicts
    as_documented: int = 0


@dataclass(slots=True)
class SideTally:
    """One upstream (baseline or canary) in the live view."""

    streams: int = 0
    bad: int = 0
    judged: int = 0  # streams that say something about the upstream (not client_disconnect)
    active: int = 0
    after_trip: int = 0  # streams started after the guard tripped
    ttfts: deque[float] = field(default_factory=lambda: deque(maxlen=2000))


@dataclass(slots=True, frozen=True)
class Recent:
    trace_id: str
    model: str
    verdict: str
    ttft: float | None
    max_gap: float | None
    upstream: str = "baseline"


def verdict_of(outcome: str, anomalies: list[str]) -> str:
    return " + ".join((outcome, *anomalies))


class LiveStats:
    """A proxy sink. `checked_prefix`: trace IDs of traffic whose verdicts the scenario table
    predicts (the demo's own generator: chat route, usage asked for)."""

    def __init__(self, checked_prefix: str | None = None, max_models: int = 100) -> None:
        self.began = time.monotonic()
        self.began_wall = time.time()  # to place a trip (wall clock) on the view's time line
        self.requests = 0
        self.streams = 0
        self.active = 0
        self.outcomes: Counter[str] = Counter()
        self.anomalies: Counter[str] = Counter()
        self.ttfts: deque[float] = deque(maxlen=TTFT_SAMPLES)
        self.worst_gap: tuple[float, str] | None = None
        self.recent: deque[Recent] = deque(maxlen=RECENT)
        self.by_model: dict[str, ModelTally] = {}
        self.cut_by_shutdown = 0
        self.stopping = False  # set by stop(), when the demo starts shutting down
        self._stopped_at: float | None = None
        self._models = LabelCap(max_models)
        self._checked_prefix = checked_prefix
        self.sides: dict[str, SideTally] = {}
        self.canary: CanaryControl | None = None  # set by the demo when a canary runs

    def _side(self, name: str) -> SideTally:
        tally = self.sides.get(name)
        if tally is None:
            tally = self.sides[name] = SideTally()
        return tally

    # Sink hooks
    def stream_started(self, rec: AuditRecord) -> None:
        self.active += 1
        self._side(rec.upstream).active += 1

    def stream_ended(self, rec: AuditRecord) -> None:
        self.active -= 1
        self._side(rec.upstream).active -= 1

    def record(self, rec: AuditRecord) -> None:
        self.requests += 1
        s = rec.stream
        if s is None:
            return
        if self.stopping and s.outcome is Outcome.CLIENT_DISCONNECT:
            self.cut_by_shutdown += 1  # the demo's own shutdown, not the gateway's doing
            return
        self.streams += 1
        self.outcomes[s.outcome.value] += 1
        side = self._side(rec.upstream)
        side.streams += 1
        bad = judge(rec)
        if bad is not None:
            side.judged += 1
            side.bad += bad
        if s.ttft is not None:
            side.ttfts.append(s.ttft)
        tripped_at = self.canary.tripped_at if self.canary is not None else None
        if tripped_at is not None and rec.started_at >= tripped_at:
            side.after_trip += 1
        self.anomalies.update(s.anomalies)
        if s.ttft is not None:
            self.ttfts.append(s.ttft)
        if s.max_gap is not None and (self.worst_gap is None or s.max_gap > self.worst_gap[0]):
            self.worst_gap = (s.max_gap, rec.trace_id)
        verdict = verdict_of(s.outcome.value, s.anomalies)
        self.recent.append(Recent(rec.trace_id, rec.model, verdict, s.ttft, s.max_gap, rec.upstream))
        model = self._models(rec.model)
        tally = self.by_model.get(model)
        if tally is None:
            tally = self.by_model[model] = ModelTally()
        tally.n += 1
        tally.verdicts[verdict] += 1
        scenario = scenarios.for_model(rec.model)
        if (
            scenario is not None
            and model != OTHER
            and rec.route == "chat_completions"
            and self._checked_prefix
            and rec.trace_id.startswith(self._checked_prefix)
        ):
            tally.checked += 1
            expected = (scenario.outcome.value, sorted(scenario.anomalies))
            tally.as_documented += (s.outcome.value, sorted(s.anomalies)) == expected

    def stop(self) -> None:
        """From now on, streams cut off as `client_disconnect` are the demo's own doing."""
        self.stopping = True
        self._stopped_at = time.monotonic()

    @property
    def elapsed(self) -> float:
        return (self._stopped_at or time.monotonic()) - self.began


def _counts(counter: Counter[str]) -> str:
    return "   ".join(f"{k} {v}" for k, v in counter.most_common()) or "-"


def _worst(stats: LiveStats) -> str:
    if stats.worst_gap is None:
        return "-"
    return f"{seconds(stats.worst_gap[0])} ({stats.worst_gap[1]})"


def _bad_share(t: SideTally) -> str:
    return f"{100.0 * t.bad / t.judged:.0f}%" if t.judged else "-"


def _sides_in_order(stats: LiveStats) -> list[tuple[str, SideTally]]:
    control = stats.canary
    if control is None or control.router.canary is None:
        return []
    names = (control.router.baseline.name, control.router.canary.name)
    return [(name, stats.sides.get(name) or SideTally()) for name in names]


def canary_status(stats: LiveStats) -> str:
    """`canary 50% (guard on)` or `canary TRIPPED at 12.3s: bad_share ...`."""
    control = stats.canary
    assert control is not None
    trip, router = control.last_trip, control.router
    if not router.tripped:
        guard = "guard on" if control.config.guard else "guard off"
        return f"canary {router.percent:g}% ({guard})"
    if trip is None:
        return "canary TRIPPED (another worker's guard): share 0%"
    at = (control.tripped_at or stats.began_wall) - stats.began_wall
    return (
        f"canary TRIPPED at {max(at, 0.0):.1f}s: {trip.rule}, canary "
        f"{trip.canary['bad_percent']}% bad vs baseline {trip.baseline['bad_percent']}% "
        f"({trip.canary['streams']} vs {trip.baseline['streams']} streams); share now 0%"
    )


def _sides_plain(stats: LiveStats) -> str:
    sides = _sides_in_order(stats)
    if not sides:
        return ""
    parts = [f"{name} {t.streams} bad {_bad_share(t)}" for name, t in sides]
    line = f" | {canary_status(stats)} | " + ", ".join(parts)
    if stats.canary is not None and stats.canary.router.tripped:
        line += " | since the trip " + ", ".join(f"{n} {t.after_trip}" for n, t in sides)
    return line


def plain_line(stats: LiveStats) -> str:
    anomalies = " ".join(f"{k}={v}" for k, v in stats.anomalies.most_common())
    outcomes = " ".join(f"{k}={v}" for k, v in stats.outcomes.most_common())
    return (
        f"[{stats.elapsed:6.1f}s] streams {stats.streams} ({stats.active} open) | "
        f"{outcomes or 'no stream yet'} | anomalies {anomalies or 'none'} | ttft p50 "
        f"{seconds(percentile(stats.ttfts, 50))} p95 {seconds(percentile(stats.ttfts, 95))}"
        f" | worst gap {_worst(stats)}{_sides_plain(stats)}"
    )


def side_lines(stats: LiveStats) -> list[str]:
    """Baseline and canary side by side, and the guard's state (empty without a canary)."""
    sides = _sides_in_order(stats)
    if not sides:
        return []
    tripped = stats.canary is not None and stats.canary.router.tripped
    rows = [("side", "streams", "open", "bad", "ttft p50", "ttft p95", "since trip" if tripped else "")]
    for name, t in sides:
        rows.append(
            (
                name,
                str(t.streams),
                str(t.active),
                _bad_share(t),
                seconds(percentile(t.ttfts, 50)),
                seconds(percentile(t.ttfts, 95)),
                str(t.after_trip) if tripped else "",
            )
        )
    return [canary_status(stats), *("  " + line for line in table(rows).splitlines())]


def view_lines(stats: LiveStats) -> list[str]:
    lines = [
        f"{stats.elapsed:6.1f}s   streams {stats.streams} ({stats.active} open)   requests {stats.requests}",
        f"outcomes   {_counts(stats.outcomes)}",
        f"anomalies  {_counts(stats.anomalies)}",
        f"ttft       p50 {seconds(percentile(stats.ttfts, 50))}   "
        f"p95 {seconds(percentile(stats.ttfts, 95))}   worst gap {_worst(stats)}",
        *side_lines(stats),
        "",
        "last streams",
    ]
    rows: list[tuple[str, ...]]
    if _sides_in_order(stats):  # a canary runs: which side served each stream
        rows = [("trace id", "side", "model", "verdict", "ttft", "max gap")]
        rows += [
            (r.trace_id, r.upstream, r.model, r.verdict, seconds(r.ttft), seconds(r.max_gap))
            for r in reversed(stats.recent)
        ]
    else:
        rows = [("trace id", "model", "verdict", "ttft", "max gap")]
        rows += [
            (r.trace_id, r.model, r.verdict, seconds(r.ttft), seconds(r.max_gap))
            for r in reversed(stats.recent)
        ]
    lines += ["  " + line for line in table(rows).splitlines()]
    return lines


def summary(stats: LiveStats) -> str:
    out = [
        f"summary: {stats.streams} streams audited by the proxy in {stats.elapsed:.1f}s",
        f"  outcomes   {_counts(stats.outcomes)}",
        f"  anomalies  {_counts(stats.anomalies)}",
        f"  ttft       p50 {seconds(percentile(stats.ttfts, 50))}   "
        f"p95 {seconds(percentile(stats.ttfts, 95))}   worst gap {_worst(stats)}",
    ]
    if sides := side_lines(stats):
        out += ["  " + line for line in sides]
    if stats.cut_by_shutdown:
        out.append(f"  {stats.cut_by_shutdown} stream(s) still open at shutdown were cut (not counted above)")
    if stats.by_model:
        rows = [("model", "streams", "verdict (most common)", "as documented")]
        for model, tally in sorted(stats.by_model.items()):
            verdict = tally.verdicts.most_common(1)[0][0]
            check = f"{tally.as_documented}/{tally.checked}" if tally.checked else "-"
            if tally.checked and tally.as_documented != tally.checked:
                check += "  (differs: see the scenario table, docs/tools/scenarios.md)"
            rows.append((model, str(tally.n), verdict, check))
        out.append("")
        out += ["  " + line for line in table(rows).splitlines()]
    return "\n".join(out)


class Screen:
    """Redraws a block of lines in place on a terminal; the rest of the output stays above."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self._drawn = 0

    def draw(self, lines: list[str]) -> None:
        width = max(20, shutil.get_terminal_size((120, 40)).columns - 1)
        text = "\n".join(line[:width] for line in lines)
        up = f"\x1b[{self._drawn}F" if self._drawn else ""
        self.out.write(f"{up}\x1b[J{text}\n")
        self.out.flush()
        self._drawn = len(lines)

    def hide_cursor(self) -> None:
        self.out.write("\x1b[?25l")
        self.out.flush()

    def show_cursor(self) -> None:
        self.out.write("\x1b[?25h")
        self.out.flush()
