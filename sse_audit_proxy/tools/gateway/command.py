"""`sse-audit-proxy gateway`: the demo gateway on its own, until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from sse_audit_proxy.cli.options import address, non_negative_float, port, positive_float, share
from sse_audit_proxy.server import loop
from sse_audit_proxy.server.listen import describe_os_error
from sse_audit_proxy.tools import scenarios
from sse_audit_proxy.tools.gateway.app import start
from sse_audit_proxy.tools.gateway.script import Timing


def add_timing_options(p: argparse.ArgumentParser) -> None:
    """The gateway's pace (also used by `demo`). Headers override them per request."""
    d = Timing()
    p.add_argument(
        "--ttft",
        type=non_negative_float,
        default=d.ttft,
        metavar="SECONDS",
        help=f"time to first token (default: {d.ttft}) [header X-Demo-TTFT-Ms]",
    )
    p.add_argument(
        "--tokens-per-second",
        type=positive_float,
        default=1 / d.interval,
        metavar="N",
        help=f"token rate after the first (default: {1 / d.interval:g})"
        " [header X-Demo-Interval-Ms: milliseconds between tokens]",
    )
    p.add_argument(
        "--jitter",
        type=share,
        default=d.jitter,
        metavar="SHARE",
        help="each gap between tokens varies by up to this share, drawn from the "
        f"prompt (default: {d.jitter}) [header X-Demo-Jitter]",
    )
    p.add_argument(
        "--fault-delay",
        type=non_negative_float,
        default=d.fault_delay,
        metavar="SECONDS",
        help="length of the timing faults: the stall, the slow "
        "first token, the keep-alive wait (default: "
        f"{d.fault_delay}) [header X-Demo-Fault-Ms]",
    )
    p.add_argument(
        "--sent-at",
        action="store_true",
        help='every JSON frame carries "sent_at", its send time in seconds since '
        "the epoch, for one-way latency measurements [header X-Demo-Sent-At: 1]",
    )


def timing_from(args: argparse.Namespace) -> Timing:
    return Timing(
        ttft=args.ttft,
        interval=1 / args.tokens_per_second,
        jitter=args.jitter,
        fault_delay=args.fault_delay,
        sent_at=args.sent_at,
    )


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "gateway",
        help="run the demo OpenAI-compatible gateway with fault scenarios",
        description="An OpenAI-compatible upstream that answers deterministically and "
        "misbehaves on demand: the scenario comes from the model name (demo-<scenario>) or "
        "the X-Demo-Scenario header; GET /v1/models lists them.",
    )
    p.add_argument(
        "--host", type=address, default="127.0.0.1", help="address to listen on (default: 127.0.0.1)"
    )
    p.add_argument(
        "--port", type=port, default=8000, help="port to listen on, 0 for any free port (default: 8000)"
    )
    p.add_argument(
        "--scenario",
        choices=sorted(scenarios.BY_NAME),
        default=None,
        help="play this scenario for every request, whatever its model, unless it "
        "names one in X-Demo-Scenario (say, a canary that buffers next to a healthy "
        "baseline)",
    )
    add_timing_options(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    return loop.run(serve(args.host, args.port, timing_from(args), args.scenario))


async def serve(host: str, port_: int, timing: Timing, scenario: str | None = None) -> int:
    try:
        runner, url = await start(timing, host, port_, scenario)
    except OSError as exc:
        print(
            f"sse-audit-proxy: error: cannot listen on {host}:{port_}: {describe_os_error(exc)}",
            file=sys.stderr,
        )
        return 1
    print(
        f"demo gateway listening on {url} (OpenAI base URL {url}/v1; scenarios: GET {url}/v1/models)",
        flush=True,
    )
    stop = asyncio.Event()
    running = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        running.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()
    return 0
