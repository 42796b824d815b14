"""`sse-audit-proxy demo`: the demo gateway, the proxy in front of it and traffic, in one process.

Everything binds 127.0.0.1 (unless told otherwise) on free ports and is printed first, so a
person can point their own client, curl or Prometheus at it while the live view runs.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import textwrap
from typing import IO

import structlog
from yarl import URL

from sse_audit_proxy.cli.options import percent, port, positive_float
from sse_audit_proxy.server import loop
from sse_audit_proxy.server.canary import CanaryConfig
from sse_audit_proxy.server.listen import describe_os_error
from sse_audit_proxy.server.proxy import ProxyConfig
from sse_audit_proxy.server.run import listen_error
from sse_audit_proxy.server.service import Service, ServiceConfig
from sse_audit_proxy.sinks.logs import configure_logging
from sse_audit_proxy.tools import gateway, scenarios, traffic
from sse_audit_proxy.tools.demo.live import LiveStats, Screen, plain_line, summary, view_lines

SHUTDOWN_GRACE = 2.0  # seconds open streams get to finish after the end (a second Ctrl-C: none)


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "demo",
        help="run the demo gateway, the proxy and traffic, with a live view",
        description="Start the demo gateway and the auditing proxy in front of it on free "
        "local ports, send a mix of fault scenarios through the proxy, and show what the "
        "proxy reports, live. Ctrl-C (or --duration) ends it with a summary.",
    )
    p.add_argument(
        "--duration",
        type=positive_float,
        default=None,
        metavar="SECONDS",
        help="seconds to run, then stop with a summary (default: until Ctrl-C)",
    )
    p.add_argument(
        "--no-traffic", action="store_true", help="send no traffic: the proxy waits for your own clients"
    )
    traffic.add_traffic_options(p, rate=4.0, concurrency=16)
    p.add_argument(
        "--host", default="127.0.0.1", help="address for the proxy and its metrics (default: 127.0.0.1)"
    )
    p.add_argument("--port", type=port, default=0, help="proxy port (default: 0, any free port)")
    p.add_argument(
        "--metrics-port", type=port, default=0, help="port of /metrics (default: 0, any free port)"
    )
    p.add_argument(
        "--idle-timeout",
        type=positive_float,
        default=5.0,
        metavar="SECONDS",
        help="the proxy's --idle-timeout; short so the `hang` scenario ends as "
        "`timeout` within the demo (default: 5)",
    )
    gateway.add_timing_options(p)
    p.add_argument(
        "--log-file",
        default=None,
        metavar="FILE",
        help="write the proxy's JSON log lines (stream_end, ...) to FILE "
        "(default: not written, the live view has the terminal)",
    )
    p.add_argument(
        "--refresh",
        type=positive_float,
        default=1.0,
        metavar="SECONDS",
        help="seconds between live view refreshes (default: 1)",
    )
    p.add_argument(
        "--canary",
        choices=sorted(scenarios.BY_NAME),
        default=None,
        metavar="SCENARIO",
        help="also run a canary gateway that plays SCENARIO (e.g. buffered) for every "
        "request, next to a healthy baseline, with the canary guard on: watch it "
        "trip (traffic is then all demo-healthy)",
    )
    p.add_argument(
        "--canary-percent",
        type=percent,
        default=50.0,
        metavar="P",
        help="with --canary: share of requests sent to the canary (default: 50)",
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    timing = gateway.timing_from(args)
    if timing.fault_delay >= args.idle_timeout:
        print(
            f"sse-audit-proxy: error: --fault-delay ({timing.fault_delay:g}s) must be shorter "
            f"than --idle-timeout ({args.idle_timeout:g}s), or the stall scenario times out",
            file=sys.stderr,
        )
        return 2
    try:
        log_file = _logs_to(args.log_file)
    except OSError as exc:
        print(f"sse-audit-proxy: error: cannot write {args.log_file}: {exc.strerror}", file=sys.stderr)
        return 2
    try:
        return loop.run(demo(args, timing))
    finally:
        if log_file is not None:
            log_file.close()


def _logs_to(path: str | None) -> IO[bytes] | None:
    """Send the proxy's log lines to a file, or keep only errors (on stderr): the live view
    owns stdout."""
    configure_logging("json")
    if path is None:
        structlog.configure(
            wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR),
            logger_factory=structlog.BytesLoggerFactory(sys.stderr.buffer),
        )
        return None
    fh = open(path, "ab")  # noqa: SIM115 - closed by run()
    structlog.configure(logger_factory=structlog.BytesLoggerFactory(fh))
    return fh


async def demo(args: argparse.Namespace, timing: gateway.Timing) -> int:
    runners = []
    try:
        gw_runner, gw_url = await gateway.start(timing, "127.0.0.1", 0)
        runners.append(gw_runner)
        canary_url = None
        if args.canary is not None:
            # A second gateway plays the canary's fault for every request.
            canary_runner, canary_url = await gateway.start(timing, "127.0.0.1", 0, scenario=args.canary)
            runners.append(canary_runner)
    except OSError as exc:
        for runner in runners:
            await runner.cleanup()
        print(
            f"sse-audit-proxy: error: cannot start the demo gateway: {describe_os_error(exc)}",
            file=sys.stderr,
        )
        return 1
    prefix = f"demo-{os.urandom(3).hex()}"
    # With a canary the scenario table's verdicts do not apply: a side may override the model.
    stats = LiveStats(checked_prefix=None if canary_url else prefix)
    canary = (
        CanaryConfig()
        if canary_url is None
        else CanaryConfig(url=str(canary_url), percent=args.canary_percent, guard=True)
    )
    config = ServiceConfig(
        proxy=ProxyConfig(upstream=gw_url, host=args.host, port=args.port, idle_timeout=args.idle_timeout),
        metrics_host=args.host,
        metrics_port=args.metrics_port,
        canary=canary,
        admin_hosts=(args.host,),  # the inspector URL printed below names it (a name: 421 else)
    )
    service = Service(config, extra_sinks=[stats])
    if canary_url is not None:
        stats.canary = service.canary
        args.mix = (("healthy", 1),)  # the baseline healthy; the canary gateway adds the fault
    try:
        await service.start()
    except OSError as exc:
        for runner in runners:
            await runner.cleanup()
        print(f"sse-audit-proxy: error: {listen_error(exc, config)}", file=sys.stderr)
        return 1
    shown = f"[{args.host}]" if ":" in args.host else args.host
    proxy_url = URL(f"http://{shown}:{service.proxy.port}")
    metrics_url = URL(f"http://{shown}:{service.metrics_port}/metrics")
    _print_header(args, proxy_url, metrics_url, gw_url, canary_url)

    stop, hurry = asyncio.Event(), asyncio.Event()
    running = asyncio.get_running_loop()

    def on_signal() -> None:
        (hurry if stop.is_set() else stop).set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        running.add_signal_handler(sig, on_signal)

    client = traffic.Traffic()
    load: asyncio.Task[traffic.Traffic] | None = None
    if not args.no_traffic:
        cfg = traffic.TrafficConfig(
            base_url=proxy_url / "v1",
            mix=args.mix,
            concurrency=args.concurrency,
            rate=args.rate,
            duration=None,
            route=args.route,
            timeout=args.idle_timeout * 4,
            grace=SHUTDOWN_GRACE,
            trace_prefix=prefix,
        )
        load = asyncio.create_task(traffic.drive(cfg, stop, client, hurry=hurry))
    await _watch(stats, stop, args.duration, args.refresh)

    stop.set()
    stats.stop()
    if load is not None:
        await load
    await service.close()
    for runner in runners:
        await runner.cleanup()
    print("\n" + summary(stats))
    if load is not None:
        t = client.total
        print(
            f"\n  the client saw: {t.n} streams, [DONE] in {t.done}, usage in "
            f"{t.usage_seen} of {t.usage_asked} that asked, cut off {t.cut}"
            + (f", still open at the end {t.open_at_end}" if t.open_at_end else ""),
            flush=True,
        )
    return 0


def _print_header(
    args: argparse.Namespace, proxy_url: URL, metrics_url: URL, gw_url: URL, canary_url: URL | None = None
) -> None:
    lines = [
        "sse-audit-proxy demo",
        f"  proxy     {proxy_url}   (OpenAI base URL {proxy_url / 'v1'})",
        f"  metrics   {metrics_url}",
        f"  inspector {metrics_url.with_path('/')}   (recent streams, verdicts, timelines)",
        f"  gateway   {gw_url}   (direct, not audited; scenarios: GET {gw_url / 'v1/models'})",
    ]
    if canary_url is not None:
        lines += [
            f"  canary    {canary_url}   plays `{args.canary}` for every request; gets "
            f"{args.canary_percent:g}% of requests; the guard trips when it is worse than the "
            "baseline",
            f"  sides     {metrics_url.with_path('/streams/recent')}?upstream=canary",
        ]
    lines += [
        f"  try       curl -N {proxy_url / 'v1/chat/completions'} -H 'Content-Type: "
        'application/json\' -d \'{"model":"demo-buffered","stream":true,"messages":'
        '[{"role":"user","content":"hi"}]}\'',
    ]
    if args.no_traffic:
        lines.append("  traffic   none (--no-traffic): send your own")
    else:
        mix = textwrap.wrap(traffic.format_mix(args.mix).replace(",", ", "), 88)
        lines.append(
            f"  traffic   {args.rate:g}/s, up to {args.concurrency} at once, route {args.route}, mix:"
        )
        lines += [f"            {line}" for line in mix]
    ends = f"after {args.duration:g}s or on Ctrl-C" if args.duration else "on Ctrl-C"
    lines += [f"  stops     {ends}", ""]
    print("\n".join(lines), flush=True)


async def _watch(stats: LiveStats, stop: asyncio.Event, duration: float | None, refresh: float) -> None:
    """Refresh the view until `stop` or the duration."""
    tty = sys.stdout.isatty()
    screen = Screen(sys.stdout)
    deadline = asyncio.get_running_loop().time() + duration if duration else float("inf")
    if tty:
        screen.hide_cursor()
    try:
        while not stop.is_set():
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                break
            await traffic.stopped_within(stop, min(refresh, left))
            if tty:
                screen.draw(view_lines(stats))
            else:
                print(plain_line(stats), flush=True)
    finally:
        if tty:
            screen.show_cursor()
