"""`sse-audit-proxy traffic`: streams in a mix of scenarios, judged as the client sees them.

Works against the demo gateway, the proxy, or any OpenAI-compatible gateway. Each stream is
judged on the client side by the same audit engine the proxy uses, so the closing summary says
what the client itself saw: time to first token, `[DONE]`, usage, finish reasons, cuts.
Memory is bounded: results are folded into per-scenario tallies as they finish.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import aiohttp
import orjson
from yarl import URL

from sse_audit_proxy.cli.format import seconds, table
from sse_audit_proxy.cli.options import (
    KEY_HEADER_DEFAULT,
    add_key_header_option,
    at_most,
    base_url,
    breaks_a_header,
    env_var_name,
    key_header_value,
    non_negative_float,
    positive_float,
    positive_int,
    request_header_no_key,
)
from sse_audit_proxy.core.audit import End, StreamAudit, StreamResult
from sse_audit_proxy.core.dialects import dialect_for_route, route_for_path
from sse_audit_proxy.core.figures import percentile
from sse_audit_proxy.server import loop
from sse_audit_proxy.tools import output_file, scenarios
from sse_audit_proxy.tools.scenarios import TOOL

ROUTES = {"chat": "chat/completions", "responses": "responses", "completions": "completions"}
PROMPTS = (
    "Summarise the rollout plan for the new gateway in three sentences.",
    "What should we watch during the canary?",
    "Explain time to first token to a new on-call engineer.",
    "Draft a status update about the cutover.",
    "List the risks of buffering in a streaming proxy.",
    "Why would a stream end without a finish reason?",
    "Write a haiku about latency.",
    "How do we roll back if the canary misbehaves?",
)
CANCEL_AFTER_READS = 1  # the `cancel` scenario's client leaves after this many body reads
TTFT_SAMPLES = 10_000  # per scenario, most recent kept for percentiles
MAX_ERROR_BODY = 64 << 10
MAX_CONCURRENCY = 10_000  # streams open at once: one task each


# The mix -----------------------------------------------------------------------------------


def parse_mix(text: str) -> tuple[tuple[str, int], ...]:
    """`healthy=8,buffered=1`: scenario names (with or without `demo-`) and whole weights."""
    mix: dict[str, int] = {}
    for part in text.split(","):
        name, sep, weight = part.strip().partition("=")
        found = scenarios.lookup(name)
        if found is None:
            known = ", ".join(s.name for s in scenarios.SCENARIOS)
            raise argparse.ArgumentTypeError(f"unknown scenario {name.strip()!r} (known: {known})")
        try:
            n = int(weight) if sep else 1
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"weight of {found.name} is not a whole number: {weight!r}"
            ) from None
        if n < 0:
            raise argparse.ArgumentTypeError(f"weight of {found.name} is negative: {n}")
        mix[found.name] = mix.get(found.name, 0) + n
    if not any(mix.values()):
        raise argparse.ArgumentTypeError("the mix has no scenario with a positive weight")
    return tuple((name, n) for name, n in mix.items() if n)


def format_mix(mix: Sequence[tuple[str, int]]) -> str:
    return ",".join(f"{name}={n}" for name, n in mix)


def interleave(mix: Sequence[tuple[str, int]]) -> Iterator[str]:
    """Smooth weighted round robin: every scenario once per cycle of sum(weights), spread out."""
    total = sum(n for _, n in mix)
    current = [0] * len(mix)
    while True:
        for i, (_, n) in enumerate(mix):
            current[i] += n
        best = max(range(len(mix)), key=current.__getitem__)
        current[best] -= total
        yield mix[best][0]


# One request -------------------------------------------------------------------------------


@dataclass(slots=True, frozen=True)
class TrafficConfig:
    base_url: URL  # the OpenAI base URL, ending in /v1
    mix: tuple[tuple[str, int], ...] = scenarios.DEFAULT_MIX
    concurrency: int = 8
    rate: float = 5.0  # requests started per second; 0: as fast as concurrency allows
    duration: float | None = 30.0  # seconds of starting requests; None: until stopped
    requests: int | None = None  # stop after this many
    route: str = "chat"
    model: str | None = None  # fixed model name; the scenario then goes in X-Demo-Scenario
    headers: tuple[tuple[str, str], ...] = ()
    api_key: str | None = None
    key_header: str = KEY_HEADER_DEFAULT  # --api-key-header
    timeout: float = 60.0  # seconds without a byte before the client gives up
    grace: float = 5.0  # after the end, how long in-flight streams may finish
    trace_prefix: str = "traffic"  # trace IDs are PREFIX-000001, ...


@dataclass(slots=True)
class ClientResult:
    scenario: str
    trace_id: str
    status: int  # 0: no response at all
    outcome: str | None = None  # judged on the client side; None without a response
    anomalies: tuple[str, ...] = ()
    ttft: float | None = None
    duration: float = 0.0
    done: bool | None = False  # None: the route has no `[DONE]` (Responses)
    usage: bool | None = None  # None: not asked for
    finish: bool = False
    cut: bool = False  # the body broke off (reset, or a proxy cutting it)
    open_at_end: bool = False  # still streaming when the run ended: cancelled after the grace
    error: str | None = None


def request_body(cfg: TrafficConfig, scenario: str, model: str, n: int) -> dict[str, Any]:
    prompt = PROMPTS[n % len(PROMPTS)]
    tools = scenario in ("tool-call", "bad-tool-args")
    if cfg.route == "responses":
        body: dict[str, Any] = {"model": model, "input": prompt, "stream": True}
        if tools:
            body["tools"] = [{"type": "function", **TOOL}]
        return body
    body = {"model": model, "stream": True, "stream_options": {"include_usage": True}}
    if cfg.route == "completions":
        body["prompt"] = prompt
        return body
    body["messages"] = [{"role": "user", "content": prompt}]
    if tools:
        body["tools"] = [{"type": "function", "function": TOOL}]
    return body


async def fill(result: ClientResult, session: aiohttp.ClientSession, cfg: TrafficConfig, n: int) -> None:
    """Send one request and fill `result` with what the client saw; when the run's end cancels
    it mid-stream, with what it had seen by then (`open_at_end`): a stream that hung was left
    out of the summary altogether (an outside review: `0 requests` while one had hung 20 s)."""
    scenario, trace_id = result.scenario, result.trace_id
    headers = {"Content-Type": "application/json", "X-Client-Request-Id": trace_id, **dict(cfg.headers)}
    if cfg.api_key:
        headers[cfg.key_header] = key_header_value(cfg.key_header, cfg.api_key)
    model = cfg.model
    if model is None:
        model = scenarios.MODEL_PREFIX + scenario
    else:
        headers[scenarios.SCENARIO_HEADER] = scenario
    body = request_body(cfg, scenario, model, n)
    url = cfg.base_url / ROUTES[cfg.route]
    clock = time.monotonic
    started = clock()
    audit: StreamAudit | None = None
    try:
        # A redirect is the answer (a gateway's URL is configured, not discovered), and
        # following it would send the key to another host.
        async with session.post(url, data=orjson.dumps(body), headers=headers, allow_redirects=False) as resp:
            result.status = resp.status
            audit = StreamAudit(
                dialect_for_route(route_for_path(url.path))(),
                started,
                include_usage="stream_options" in body,
                content_encoding=resp.headers.get("Content-Encoding", ""),
            )
            end = await _read(resp, audit, scenario, clock)
    except (aiohttp.ClientError, OSError) as exc:  # no HTTP answer at all, e.g. a bad status line
        result.error = type(exc).__name__
        result.duration = clock() - started
        return
    except (ValueError, TypeError) as exc:  # a request aiohttp refuses to send (a header's value)
        result.error = type(exc).__name__  # (not its text: it may quote the header, a key)
        result.duration = clock() - started
        return
    except asyncio.CancelledError:
        result.open_at_end = True
        result.duration = clock() - started
        if audit is None:
            result.error = "no response by the end of the run"
        else:
            _judged(result, audit.finish(clock(), End.CLIENT_GONE), cfg, End.CLIENT_GONE)
        raise
    _judged(result, audit.finish(clock(), end), cfg, end)


def _judged(result: ClientResult, s: StreamResult, cfg: TrafficConfig, end: End) -> None:
    result.outcome = s.outcome.value
    result.anomalies = tuple(s.anomalies)
    result.ttft = s.ttft
    result.duration = s.duration
    # Responses streams end with their terminal event, never `[DONE]`; their usage is always
    # part of it (it read `[DONE] 0/5` and usage `-` on healthy streams).
    result.done = None if cfg.route == "responses" else s.done
    result.usage = s.usage is not None if s.usage_requested else None
    result.finish = bool(s.finish_reasons)
    result.cut = end is End.UPSTREAM_BROKEN


async def _read(
    resp: aiohttp.ClientResponse, audit: StreamAudit, scenario: str, clock: Callable[[], float]
) -> End:
    if resp.status >= 300:  # a redirect too: an answer, not a stream
        await resp.content.read(MAX_ERROR_BODY)
        return End.UPSTREAM_STATUS
    reads = 0
    try:
        while chunk := await resp.content.readany():
            audit.feed(chunk, clock())
            reads += 1
            if scenario == "cancel" and reads >= CANCEL_AFTER_READS:
                resp.close()
                return End.CLIENT_GONE
    except TimeoutError:
        return End.IDLE_TIMEOUT
    except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError, OSError):
        return End.UPSTREAM_BROKEN
    return End.UPSTREAM_EOF


# Tallies -----------------------------------------------------------------------------------


@dataclass(slots=True)
class Tally:
    n: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    verdicts: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)
    done: int = 0
    usage_asked: int = 0
    usage_seen: int = 0
    finish: int = 0
    cut: int = 0
    open_at_end: int = 0
    done_expected: int = 0  # streams on a route that ends with `[DONE]`
    errors: Counter[str] = field(default_factory=Counter)
    ttfts: deque[float] = field(default_factory=lambda: deque(maxlen=TTFT_SAMPLES))

    def add(self, r: ClientResult) -> None:
        self.n += 1
        self.statuses[r.status] += 1
        if r.error:
            self.errors[r.error] += 1
        if r.outcome is not None:
            self.outcomes[r.outcome] += 1
            self.verdicts[" + ".join((r.outcome, *r.anomalies))] += 1
        if r.done is not None:
            self.done_expected += 1
            self.done += r.done
        self.finish += r.finish
        self.cut += r.cut
        self.open_at_end += r.open_at_end
        if r.usage is not None:
            self.usage_asked += 1
            self.usage_seen += r.usage
        if r.ttft is not None:
            self.ttfts.append(r.ttft)

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.n,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "outcomes": dict(self.outcomes),
            "verdicts": dict(self.verdicts),
            "done_seen": self.done,
            "usage_asked": self.usage_asked,
            "usage_seen": self.usage_seen,
            "finish_reason_seen": self.finish,
            "cut": self.cut,
            "open_at_end": self.open_at_end,
            "errors": dict(self.errors),
            "ttft_p50_s": percentile(self.ttfts, 50),
            "ttft_p95_s": percentile(self.ttfts, 95),
        }


class Traffic:
    """What a run has seen so far: totals, per scenario, and what is in flight."""

    def __init__(self) -> None:
        self.total = Tally()
        self.by_scenario: dict[str, Tally] = {}
        self.started = 0
        self.in_flight = 0
        self.began = time.monotonic()
        self.ended: float | None = None

    def add(self, r: ClientResult) -> None:
        self.total.add(r)
        tally = self.by_scenario.get(r.scenario)
        if tally is None:
            tally = self.by_scenario[r.scenario] = Tally()
        tally.add(r)

    @property
    def elapsed(self) -> float:
        return (self.ended or time.monotonic()) - self.began

    def as_dict(self) -> dict[str, Any]:
        return {
            "elapsed_s": round(self.elapsed, 3),
            "started": self.started,
            "total": self.total.as_dict(),
            "by_scenario": {k: v.as_dict() for k, v in self.by_scenario.items()},
        }


# Driving -----------------------------------------------------------------------------------


async def stopped_within(stop: asyncio.Event, timeout: float) -> bool:
    """Sleep up to `timeout`; True at once if `stop` is set."""
    if timeout <= 0:
        return stop.is_set()
    try:
        await asyncio.wait_for(stop.wait(), timeout)
    except TimeoutError:
        return False
    return True


async def drive(
    cfg: TrafficConfig, stop: asyncio.Event, traffic: Traffic, hurry: asyncio.Event | None = None
) -> Traffic:
    """Send the mix until the duration, the request count or `stop`; then let in-flight
    streams finish for up to `cfg.grace` seconds (or until `hurry`) and cancel the rest.

    Each of `cfg.concurrency` workers takes the next start slot (`1/rate` apart, never in a
    burst to catch up) and runs one stream at a time, so both limits hold."""
    running = asyncio.get_running_loop()
    deadline = running.time() + cfg.duration if cfg.duration else float("inf")
    gap = 1.0 / cfg.rate if cfg.rate else 0.0
    order = interleave(cfg.mix)
    next_at = running.time()
    count = 0

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal next_at, count
        while not stop.is_set():
            now = running.time()
            slot = max(next_at, now)
            if slot >= deadline or (cfg.requests is not None and count >= cfg.requests):
                return
            next_at = slot + gap
            n = count
            count += 1
            if await stopped_within(stop, slot - now):
                return
            traffic.started += 1
            traffic.in_flight += 1
            result = ClientResult(next(order), f"{cfg.trace_prefix}-{n + 1:06d}", 0)
            try:
                await fill(result, session, cfg, n)
            finally:
                traffic.in_flight -= 1
                traffic.add(result)  # one cancelled at the end too

    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=cfg.timeout)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout, auto_decompress=False) as session:
        workers = [asyncio.create_task(worker(session)) for _ in range(cfg.concurrency)]
        ending: asyncio.Task[Any] = asyncio.create_task(_ending(stop, deadline))
        pending: set[asyncio.Task[Any]] = set(workers)
        while pending and not ending.done():
            _, pending = await asyncio.wait(pending | {ending}, return_when="FIRST_COMPLETED")
            pending.discard(ending)
        hurried: asyncio.Task[Any] = asyncio.create_task((hurry or asyncio.Event()).wait())
        grace_ends = running.time() + cfg.grace
        while pending and not hurried.done() and running.time() < grace_ends:
            _, pending = await asyncio.wait(
                pending | {hurried}, return_when="FIRST_COMPLETED", timeout=grace_ends - running.time()
            )
            pending.discard(hurried)
        for task in (*pending, ending, hurried):
            task.cancel()
        await asyncio.gather(*workers, ending, hurried, return_exceptions=True)
    traffic.ended = time.monotonic()
    return traffic


async def _ending(stop: asyncio.Event, deadline: float) -> None:
    """Done when the run should stop starting requests: at `stop` or the deadline."""
    await stopped_within(stop, deadline - asyncio.get_running_loop().time())


# Display -----------------------------------------------------------------------------------


def progress_line(t: Traffic) -> str:
    outcomes = "  ".join(f"{k} {v}" for k, v in sorted(t.total.outcomes.items()))
    errors = sum(t.total.errors.values())
    return (
        f"[{t.elapsed:6.1f}s] started {t.started}  finished {t.total.n}  in flight "
        f"{t.in_flight}  | {outcomes or 'no stream yet'}"
        + (f"  | no response {errors}" if errors else "")
        + f"  | ttft p50 {seconds(percentile(t.total.ttfts, 50))} "
        f"p95 {seconds(percentile(t.total.ttfts, 95))}"
    )


def _ratio(k: int, n: int) -> str:
    return f"{k}/{n}" if n else "-"


def summary(t: Traffic) -> str:
    rate = t.total.n / t.elapsed if t.elapsed > 0 else 0.0
    rows = [
        (
            "scenario",
            "n",
            "http",
            "ttft p50",
            "ttft p95",
            "[DONE]",
            "usage",
            "finish",
            "cut",
            "open",
            "verdict seen by the client (most common)",
        )
    ]
    for name, tally in [*sorted(t.by_scenario.items()), ("all", t.total)]:
        http = " ".join(f"{s or 'none'}x{n}" for s, n in sorted(tally.statuses.items()))
        verdict = (
            tally.verdicts.most_common(1)[0][0]
            if tally.verdicts
            else ("no response: " + ", ".join(tally.errors) if tally.errors else "-")
        )
        if name == "all":
            verdict = ""
        rows.append(
            (
                name,
                str(tally.n),
                http,
                seconds(percentile(tally.ttfts, 50)),
                seconds(percentile(tally.ttfts, 95)),
                _ratio(tally.done, tally.done_expected),
                _ratio(tally.usage_seen, tally.usage_asked),
                _ratio(tally.finish, tally.n),
                str(tally.cut),
                str(tally.open_at_end),
                verdict,
            )
        )
    head = f"traffic summary: {t.total.n} requests in {t.elapsed:.1f}s ({rate:.1f}/s), as the client saw them"
    if t.total.open_at_end:
        head += (
            f"; {t.total.open_at_end} still open when the run ended (the client left them: "
            "a stream that hangs shows here)"
        )
    return head + "\n" + table(rows)


class Progress:
    """A line rewritten in place on a terminal; plain lines otherwise."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.tty = out.isatty()

    def show(self, line: str) -> None:
        if self.tty:
            self.out.write("\r" + line + "\x1b[K")
        else:
            self.out.write(line + "\n")
        self.out.flush()

    def close(self) -> None:
        if self.tty:
            self.out.write("\n")
            self.out.flush()


# Command -----------------------------------------------------------------------------------


# The mix when a model is named and none is given: a real gateway ignores the demo's scenario
# header, so each demo fault's row said what the healthy rows said under its name (an outside
# review against LiteLLM: `http-500 … complete`); these two ask it different things.
MODEL_MIX = (("healthy", 10), ("tool-call", 2))


def add_traffic_options(
    p: argparse.ArgumentParser, *, rate: float, concurrency: int, model_mix: bool = False
) -> None:
    """The load options (also used by `demo`). `model_mix`: without --mix, MODEL_MIX when
    --model is given (the option is then None until `run` decides)."""
    p.add_argument(
        "--mix",
        type=parse_mix,
        default=None if model_mix else scenarios.DEFAULT_MIX,
        metavar="MIX",
        help="scenarios and weights, e.g. healthy=8,buffered=1,truncated=1 (default: "
        "every scenario, weighted healthy=10, tool-call=2, the others 1"
        + (
            "; with --model, healthy=10,tool-call=2: a real gateway ignores the scenario header)"
            if model_mix
            else ")"
        ),
    )
    p.add_argument(
        "--rate",
        type=non_negative_float,
        default=rate,
        metavar="PER_SECOND",
        help=f"requests started per second, 0 for as fast as --concurrency allows (default: {rate:g})",
    )
    p.add_argument(
        "--concurrency",
        type=at_most(positive_int, MAX_CONCURRENCY, f"{MAX_CONCURRENCY:,}"),  # a task each: 10**28 OOM
        default=concurrency,
        metavar="N",
        help=f"most streams open at once (default: {concurrency})",
    )
    p.add_argument(
        "--route",
        choices=tuple(ROUTES),
        default="chat",
        help="API to call: chat (/chat/completions), responses, completions (default: chat)",
    )


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "traffic",
        help="send a mix of demo scenarios and report what the client saw",
        description="Streaming requests to any OpenAI-compatible base URL (the demo gateway, "
        "the proxy, a real gateway) in a weighted mix of demo scenarios; a progress line, then "
        "a summary of what the client itself saw.",
    )
    p.add_argument(
        "--base-url",
        type=base_url,
        required=True,
        metavar="URL",
        help="OpenAI base URL, e.g. http://127.0.0.1:8080/v1 (/v1 is added to a URL without a path)",
    )
    add_traffic_options(p, rate=5.0, concurrency=8, model_mix=True)
    p.add_argument(
        "--duration",
        type=positive_float,
        default=30.0,
        metavar="SECONDS",
        help="seconds to keep starting requests (default: 30)",
    )
    p.add_argument(
        "--requests",
        type=positive_int,
        default=None,
        metavar="N",
        help="stop after starting this many requests",
    )
    p.add_argument(
        "--model",
        default=None,
        help="send this model name and put the scenario in the X-Demo-Scenario "
        "header (default: the model is demo-<scenario>)",
    )
    p.add_argument(
        "-H",
        "--header",
        action="append",
        default=[],
        metavar="'NAME: VALUE'",
        type=request_header_no_key,
        help="extra request header, repeatable (e.g. -H 'X-Demo-TTFT-Ms: 50'); not a key's: "
        "see --api-key-env",
    )
    p.add_argument(
        "--api-key-env",
        metavar="NAME",
        type=env_var_name,
        default=None,
        help="environment variable holding the API key, sent as a Bearer token or in --api-key-header",
    )
    add_key_header_option(p)
    p.add_argument(
        "--timeout",
        type=positive_float,
        default=60.0,
        metavar="SECONDS",
        help="seconds without a byte before the client gives up on a stream (default: 60)",
    )
    p.add_argument("--json", metavar="FILE", default=None, help="also write the summary as JSON to FILE")
    p.add_argument(
        "--refresh",
        type=positive_float,
        default=1.0,
        metavar="SECONDS",
        help="seconds between progress lines (default: 1)",
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.json and (why := output_file.problem(Path(args.json))):
        print(f"sse-audit-proxy: error: --json {args.json}: {why}", file=sys.stderr)
        return 2
    api_key = None
    if args.api_key_env:
        api_key = os.environ.get(args.api_key_env)
        if not api_key:
            print(
                f"sse-audit-proxy: error: environment variable {args.api_key_env} is not set", file=sys.stderr
            )
            return 2
        if breaks_a_header(api_key):
            print(
                f"sse-audit-proxy: error: environment variable {args.api_key_env} holds a line break or NUL",
                file=sys.stderr,
            )
            return 2
    cfg = TrafficConfig(
        base_url=args.base_url,
        mix=args.mix or (MODEL_MIX if args.model else scenarios.DEFAULT_MIX),
        concurrency=args.concurrency,
        rate=args.rate,
        duration=args.duration,
        requests=args.requests,
        route=args.route,
        model=args.model,
        headers=tuple(args.header),
        api_key=api_key,
        key_header=args.api_key_header,
        timeout=args.timeout,
        trace_prefix=f"traffic-{os.urandom(3).hex()}",
    )
    return loop.run(_main(cfg, args.refresh, args.json))


async def _main(cfg: TrafficConfig, refresh: float, json_path: str | None) -> int:
    stop, hurry = asyncio.Event(), asyncio.Event()
    running = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):  # the first stops, a second skips the grace
        running.add_signal_handler(sig, lambda: (hurry if stop.is_set() else stop).set())
    print(
        f"traffic: {format_mix(cfg.mix)} to {cfg.base_url / ROUTES[cfg.route]} at "
        f"{cfg.rate:g}/s, {cfg.concurrency} at once"
        + (f", for {cfg.duration:g}s" if cfg.duration else "")
        + " (Ctrl-C to stop)",
        flush=True,
    )
    traffic = Traffic()
    progress = Progress(sys.stdout)
    task = asyncio.create_task(drive(cfg, stop, traffic, hurry))
    while not task.done():
        await asyncio.wait({task}, timeout=refresh)
        progress.show(progress_line(traffic))
    progress.close()
    await task
    print(summary(traffic), flush=True)
    if json_path and (
        why := output_file.write(Path(json_path), orjson.dumps(traffic.as_dict(), option=orjson.OPT_INDENT_2))
    ):
        print(f"sse-audit-proxy: error: --json {json_path}: {why}", file=sys.stderr)
        return 2
    if traffic.total.n and traffic.total.errors.total() == traffic.total.n:
        print(f"sse-audit-proxy: error: no request got a response from {cfg.base_url}", file=sys.stderr)
        return 1
    return 0
