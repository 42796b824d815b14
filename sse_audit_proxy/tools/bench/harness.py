"""Runs workloads against targets: the gateway directly, the proxy, and any `--against` URL.

The gateway and the client processes live for the whole benchmark; the proxy is started
fresh for every run (so a run's memory is not a previous run's leftovers) and warmed up
before measuring. Targets take turns within each repeat, so a noisy moment on the machine
falls on all of them alike.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import statistics
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from yarl import URL

from sse_audit_proxy.core.figures import ms, percentile
from sse_audit_proxy.tools.bench import nginx, procs
from sse_audit_proxy.tools.bench.client import Batch, BatchResult, client_main
from sse_audit_proxy.tools.bench.workloads import LATENCY, MEMORY, THROUGHPUT, Workload, sse_frames

CHAT_PATH = "v1/chat/completions"
START_DELAY = 0.3  # seconds between handing out a batch and its first stream
WARMUP_OVERLAP_MS = 100.0  # a warm-up stream's first token: this long after the last one started
RECORDS_TIMEOUT = 5.0  # seconds to wait for the records of streams that have ended
SATURATED = 0.85  # a share of its CPUs above which a process group is the bottleneck


@dataclass(slots=True, frozen=True)
class Target:
    name: str  # the column in the table
    kind: str  # direct | proxy | nginx (started by the bench) | against
    url: str | None = None  # fixed for direct and against; a proxy or nginx gets one per run
    workers: int = 1
    pid: int | None = None  # whose CPU and memory to account (against: when given)
    source: str | None = None  # proxy: run the package in this directory (--baseline)


def ms4(seconds: float | None) -> float | None:
    return ms(seconds, 4)


class Clients:
    """The load generator's processes, kept running across runs."""

    def __init__(self, count: int, cpus: frozenset[int] | None) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._conns: list[Connection] = []
        self._procs: list[BaseProcess] = []
        for i in range(count):
            parent, child = ctx.Pipe()
            proc = ctx.Process(
                target=client_main, args=(child, cpus), daemon=True, name=f"sse-audit-bench-client-{i}"
            )
            proc.start()
            child.close()
            self._conns.append(parent)
            self._procs.append(proc)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self._procs if p.pid is not None]

    def dispatch(self, batch: Batch) -> None:
        """Split the batch's streams across the processes, their starts interleaved."""
        for conn, share in zip(self._conns, split(batch, len(self._conns)), strict=True):
            conn.send(share)

    def dispatch_at_once(self, batches: Sequence[Batch]) -> None:
        """Several targets' batches, each split as by dispatch(), every process running its
        share of each at once (collect_at_once() gives their results in this order)."""
        shares = [split(batch, len(self._conns)) for batch in batches]
        for i, conn in enumerate(self._conns):
            conn.send(tuple(share[i] for share in shares))

    def collect(self, timeout: float) -> list[Any]:
        """Each process's answer: a BatchResult, or a list of them after dispatch_at_once()."""
        results = []
        deadline = time.monotonic() + timeout
        for conn in self._conns:
            if not conn.poll(max(deadline - time.monotonic(), 0.1)):
                raise TimeoutError("a client process did not report in time")
            results.append(conn.recv())
        return results

    def collect_at_once(self, count: int, timeout: float) -> list[BatchResult]:
        """The results of dispatch_at_once()'s `count` batches, each merged over the processes."""
        answers = self.collect(timeout)
        return [merge([answer[k] for answer in answers]) for k in range(count)]

    def close(self) -> None:
        for conn in self._conns:
            with contextlib.suppress(OSError):
                conn.send(None)
        for proc in self._procs:
            proc.join(5.0)
            if proc.is_alive():
                proc.kill()


def split(batch: Batch, n: int) -> list[Batch]:
    """The batch's streams dealt to `n` client processes in turn: process i starts the batch's
    streams i, i + n, i + 2n, ..., so the starts keep the batch's even spacing. (Each process
    had spaced its own by the batch's step, not n steps: two streams started at each instant,
    over half the time, and their frames came together for the whole run; an outside review.)"""
    step = batch.open_over / batch.streams if batch.streams else 0.0
    return [
        replace(
            batch,
            streams=(share := batch.streams // n + (1 if i < batch.streams % n else 0)),
            offset=batch.offset + i * step,
            open_over=step * n * share,
        )
        for i in range(n)
    ]


def merge(results: Sequence[BatchResult]) -> BatchResult:
    out = BatchResult()
    for r in results:
        out.streams_ok += r.streams_ok
        out.streams_failed += r.streams_failed
        out.frames += r.frames
        out.chunks += r.chunks
        out.bytes += r.bytes
        out.latencies.extend(r.latencies)
        out.ttfts.extend(r.ttfts)
        out.spans.extend(r.spans)
        out.errors.update(r.errors)
        out.cpu += r.cpu
        if r.first_start:
            out.first_start = min(out.first_start or r.first_start, r.first_start)
        out.last_end = max(out.last_end, r.last_end)
    return out


class Harness:
    def __init__(self, *, pin: bool, clients: int, gateway_port: int) -> None:
        self.pin = pin
        harness_cpus = procs.placement(pin, 1).harness
        self.gateway = procs.start_gateway(gateway_port, harness_cpus)
        self.clients = Clients(clients, harness_cpus)
        self.client_count = clients

    def close(self) -> None:
        self.clients.close()
        self.gateway.stop()

    # One run ---------------------------------------------------------------------------

    def run(self, workload: Workload, target: Target) -> dict[str, Any]:
        place = procs.placement(self.pin, target.workers)
        live = self._start(target, place)
        try:
            seen = self._warm(workload, live)
            snap = self._snapshot(live)
            batch = workload_batch(workload, live.url)
            self.clients.dispatch(batch)
            rss_open, sampled_at = 0, 0.0
            if workload.sample_after:
                time.sleep(max(batch.start_at + workload.sample_after - time.time(), 0.0))
                sampled_at = time.time()
                rss_open = sum(procs.rss_bytes(p) for p in snap.tree)
            result = merge(self.clients.collect(workload.timeout + 30.0))
            cpu = snap.usage(procs.cpu_by_pid(snap.tree + snap.gateway_tree), result.cpu)
            run = self._recorded(workload, live, seen, snap, result, cpu, place)
            if workload.name == MEMORY:
                open_now = sum(1 for start, end in result.spans if start <= sampled_at <= end)
                accounted = live.pid is not None and not cpu.target_gone
                run.update(
                    {
                        "open_at_sample": open_now,
                        "rss_idle_bytes": snap.rss_idle if accounted else None,
                        "rss_open_bytes": rss_open if accounted else None,
                        "rss_per_stream_kib": round((rss_open - snap.rss_idle) / open_now / 1024, 2)
                        if accounted and open_now
                        else None,
                    }
                )
            return run
        finally:
            live.stop()

    def run_at_once(self, workload: Workload, targets: Sequence[Target]) -> dict[str, dict[str, Any]]:
        """One run of `workload` through every target at the same moment (`--at-once`), each
        on the proxy's CPUs, warmed one after another first: what the machine's other load
        does to one target it does to all, so their ratios in the run hold still."""
        place = procs.placement(self.pin, max(t.workers for t in targets))
        lives: list[_Live] = []
        try:
            for target in targets:
                lives.append(self._start(target, place))
            seen = [self._warm(workload, live) for live in lives]
            snaps = [self._snapshot(live) for live in lives]
            now = time.time()
            batches = [workload_batch(workload, live.url, start_at=now + START_DELAY) for live in lives]
            # The targets' streams interleaved: target k's starts a k-th of a step after the
            # first one's, so no two targets' frames are written in the same instant.
            step = workload.open_over / workload.streams / len(batches) if workload.streams else 0.0
            batches = [replace(b, offset=k * step) for k, b in enumerate(batches)]
            self.clients.dispatch_at_once(batches)
            results = self.clients.collect_at_once(len(batches), workload.timeout + 30.0)
            every = [p for snap in snaps for p in snap.tree] + snaps[0].gateway_tree
            after = procs.cpu_by_pid(every)
            runs = {}
            for k, live in enumerate(lives):
                cpu = snaps[k].usage(after, results[k].cpu)
                run = self._recorded(workload, live, seen[k], snaps[k], results[k], cpu, place)
                runs[live.target.name] = run
            return runs
        finally:
            for live in lives:
                live.stop()

    def _start(self, target: Target, place: procs.Placement) -> _Live:
        """The target, with a process started for this run where it is the bench's own."""
        started: procs.Child | None = None  # a proxy or nginx, started for this run only
        url, pid = target.url, target.pid
        if target.kind == "direct":
            url = self.gateway.url
        elif target.kind == "against" and pid is not None:
            procs.pin_tree(pid, place.proxy)  # the same CPUs our proxy gets, when pinning
        elif target.kind == "proxy":
            started = procs.start_proxy(self.gateway.url, target.workers, place.proxy, target.source)
        elif target.kind == "nginx":
            started = nginx.start(self.gateway.url, place.proxy)
        if started is not None:
            url, pid = started.url, started.pid
        assert url is not None
        return _Live(target, URL(url), pid, started)

    def _go(self, batch: Batch, timeout: float) -> BatchResult:
        self.clients.dispatch(batch)
        return merge(self.clients.collect(timeout))

    def _warm(self, workload: Workload, live: _Live) -> int:
        """Warm the target up; how many stream records its log holds by then."""
        if workload.warmup:
            warm = self._go(warmup_batch(workload, live.url), 30.0)
            return _settled(live.proxy, 0, warm.streams_ok + warm.streams_failed)
        return len(_stream_ends(live.proxy)) if live.proxy is not None else 0

    def _snapshot(self, live: _Live) -> _Snapshot:
        tree = procs.descendants(live.pid) if live.pid else []
        gateway_tree = procs.descendants(self.gateway.pid)
        return _Snapshot(
            tree=tree,
            gateway_tree=gateway_tree,
            rss_idle=sum(procs.rss_bytes(p) for p in tree),
            load=procs.load_average(),
            before=procs.cpu_by_pid(tree + gateway_tree),
        )

    def _recorded(
        self,
        workload: Workload,
        live: _Live,
        seen: int,
        snap: _Snapshot,
        result: BatchResult,
        cpu: Usage,
        place: procs.Placement,
    ) -> dict[str, Any]:
        """A run's fields from what the clients saw and the CPU spent."""
        target, pid, proxy = live.target, live.pid, live.proxy
        run: dict[str, Any] = {
            "target": target.name,
            "load_average": [round(x, 2) for x in snap.load],
            "streams": workload.streams,
            "streams_ok": result.streams_ok,
            "streams_failed": result.streams_failed,
            "errors": dict(result.errors),
            "frames": result.frames,
            "frames_expected": result.streams_ok * sse_frames(workload.frames),
            "chunks": result.chunks,
            # Through a proxy that forwards each upstream read as one chunk (this one, nginx
            # with proxy_buffering off), this is how many frames each read carried.
            "frames_per_chunk": round(result.frames / result.chunks, 3) if result.chunks else None,
            # Wall clock, first stream's start to last stream's end: when the run took place.
            "span": [round(result.first_start, 3), round(result.last_end, 3)],
        }
        if proxy is not None:
            _settled(proxy, seen, result.streams_ok + result.streams_failed)
            outcomes = Counter(str(line.get("outcome")) for line in _stream_ends(proxy)[seen:])
            run["proxy_verdicts"] = dict(outcomes)
        accounted = pid is not None and not cpu.target_gone
        if cpu.target_gone:
            run["target_gone"] = True
        if accounted and result.frames:
            # The target's own process tree, from just before the streams are handed out to
            # just after the last one ended, over the frames the clients got through it.
            run["target_cpu_s"] = round(cpu.target_total, 6)
            run["cpu_us_per_frame"] = round(cpu.target_total / result.frames * 1e6, 3)
        if workload.name == LATENCY:
            run.update(_latency(result))
        elif workload.name == THROUGHPUT:
            run.update(self._throughput(result, cpu, place, target.workers, accounted))
        return run

    def _throughput(
        self, result: BatchResult, cpu: Usage, place: procs.Placement, workers: int, accounted: bool
    ) -> dict[str, Any]:
        wall = result.last_end - result.first_start if result.first_start else 0.0
        if wall <= 0:
            return {}
        frames = result.frames
        # CPU is read around the whole run; the few milliseconds outside the streams' own
        # wall time are idle, so that is the divisor for cores busy.
        target = cpu.target_total / wall
        gateway, clients = cpu.gateway / wall, cpu.clients / wall
        out: dict[str, Any] = {
            "wall_s": round(wall, 4),
            "frames_per_s": round(frames / wall),
            "gateway_cores": round(gateway, 3),
            "client_cores": round(clients, 3),
        }
        if accounted:
            out.update(
                {
                    "target_cores": round(target, 3),
                    "cpu_s_per_million_frames": round(cpu.target_total / frames * 1e6, 3) if frames else None,
                    "frames_per_core_s": round(frames / cpu.target_total) if cpu.target_total > 0 else None,
                }
            )
        # A single-threaded process saturates at one core; a pinned group at its CPU count.
        busiest = max(cpu.target.values(), default=0.0) / wall
        proxy_busy = accounted and (
            busiest >= SATURATED
            or target >= SATURATED * workers
            or (place.proxy is not None and target >= SATURATED * len(place.proxy))
        )
        harness = gateway + clients
        harness_busy = (
            gateway >= SATURATED
            or clients >= SATURATED * self.client_count
            or (place.harness is not None and harness >= SATURATED * len(place.harness))
        )
        out["bottleneck"] = (
            "proxy+harness"
            if proxy_busy and harness_busy
            else "proxy"
            if proxy_busy
            else "harness"
            if harness_busy
            else "none"
        )
        return out


@dataclass(slots=True)
class _Live:
    """A target during one run: where it listens, whose CPU counts, what the bench started."""

    target: Target
    url: URL
    pid: int | None
    started: procs.Child | None

    @property
    def proxy(self) -> procs.Child | None:
        """This proxy, started by the bench: its log holds the stream records."""
        return self.started if self.target.kind == "proxy" else None

    def stop(self) -> None:
        if self.started is not None:
            self.started.stop()


@dataclass(slots=True)
class _Snapshot:
    """Just before a run's streams are handed out."""

    tree: list[int]  # the target's processes
    gateway_tree: list[int]
    rss_idle: int
    load: tuple[float, float, float]
    before: dict[int, float]  # CPU seconds so far, by process

    def usage(self, after: dict[int, float], clients: float) -> Usage:
        before = self.before
        return Usage(
            target={p: after[p] - before.get(p, 0.0) for p in self.tree if p in after},
            gateway=sum(after[p] - before.get(p, 0.0) for p in self.gateway_tree if p in after),
            clients=clients,
            target_gone=any(p not in after for p in self.tree),
        )


@dataclass(slots=True)
class Usage:
    """CPU seconds spent during one run."""

    target: dict[int, float]  # per process of the proxy under test (workers apart)
    gateway: float
    clients: float
    # A process of the target ended during the run: what it spent is unknown, so no CPU figure.
    target_gone: bool = False

    @property
    def target_total(self) -> float:
        return sum(self.target.values())


def _latency(result: BatchResult) -> dict[str, Any]:
    lat, ttft = result.latencies, result.ttfts
    return {
        "samples": len(lat),
        "latency_p50_ms": ms4(percentile(lat, 50)),
        "latency_p99_ms": ms4(percentile(lat, 99)),
        "latency_max_ms": ms4(max(lat) if lat else None),
        "ttft_p50_ms": ms4(percentile(ttft, 50)),
        "ttft_p99_ms": ms4(percentile(ttft, 99)),
    }


def median_of(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The median of every numeric field across repeats; other fields from the most common."""
    out: dict[str, Any] = {}
    if not runs:
        return out
    for key in runs[0]:
        values = [r.get(key) for r in runs]
        numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if numbers and len(numbers) == len(values):
            m = statistics.median(numbers)
            out[key] = round(m, 4) if isinstance(m, float) else m
        elif all(isinstance(v, str) for v in values):
            out[key] = Counter(values).most_common(1)[0][0]
    return out


def workload_batch(workload: Workload, url: URL, **changes: Any) -> Batch:
    """The streams of one run of `workload` against the target at `url`."""
    batch = Batch(
        host=url.host or "127.0.0.1",
        port=url.port or 80,
        path=url.path.rstrip("/") + "/" + CHAT_PATH,
        streams=workload.streams,
        frames=workload.frames,
        interval_ms=workload.interval_ms,
        ttft_ms=workload.ttft_ms,
        stamps=workload.stamps,
        start_at=time.time() + START_DELAY,
        open_over=workload.open_over,
        timeout=workload.timeout,
    )
    return replace(batch, **changes)


def _stream_ends(proxy: procs.Child) -> list[dict[str, object]]:
    return [line for line in proxy.log_lines() if line.get("event") == "stream_end"]


def _settled(proxy: procs.Child | None, seen: int, ended: int) -> int:
    """How many stream records the proxy has logged, once the `ended` streams after the
    first `seen` are among them (or after RECORDS_TIMEOUT): its lines are written by a
    thread, a moment after each stream's last byte, so a count taken at once missed some
    and the next run counted them as its own."""
    if proxy is None:
        return 0
    deadline = time.monotonic() + RECORDS_TIMEOUT
    while (count := len(_stream_ends(proxy))) < seen + ended and time.monotonic() < deadline:
        time.sleep(0.02)
    return count


def warmup_batch(workload: Workload, url: URL) -> Batch:
    """Short streams before a run, all open at once: every one's first token waits until the
    last has started, so a proxy's upstream pool ends with an idle connection for each
    concurrent stream of the workload, as under steady traffic. (Run one after another, they
    left the pool one or two, and nearly every measured stream opened a connection of its own:
    48 of 50 through this proxy, 41 through nginx.)"""
    return workload_batch(
        workload,
        url,
        streams=workload.warmup,
        frames=5,
        interval_ms=0.0,
        ttft_ms=workload.open_over * 1000.0 + WARMUP_OVERLAP_MS,
        stamps=False,
        timeout=20.0,
    )
