"""`sse-audit-proxy serve`: run the proxy until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import errno
import signal
import sys
from collections.abc import Callable

import structlog

from . import loop, workers
from .audit import Thresholds
from .logs import LOG_FORMATS, configure_logging
from .options import option, port, positive_float, positive_int, ratio, size, upstream_url
from .proxy import ProxyConfig
from .recent import DEFAULT_CAPACITY
from .service import Service, ServiceConfig


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("serve", help="run the auditing reverse proxy",
                       description="Forward every request to --upstream unchanged and audit "
                                   "each event stream on the side.")
    option(p, "--upstream", type=upstream_url, required=True,
           help="base URL of the gateway to forward to, e.g. https://gateway.internal")
    option(p, "--host", default="127.0.0.1", help="address to listen on")
    option(p, "--port", type=port, default=8080, help="port to listen on (0: any free port)")
    option(p, "--metrics-host", default="127.0.0.1", help="address for /metrics and /healthz")
    option(p, "--metrics-port", type=port, default=9464, help="port for /metrics and /healthz")
    option(p, "--idle-timeout", type=positive_float, default=300.0,
           help="seconds without an upstream byte before a stream is aborted as `timeout`")
    option(p, "--connect-timeout", type=positive_float, default=10.0,
           help="seconds to establish the upstream connection (then 504)")
    option(p, "--max-body-bytes", type=size, default=32 << 20,
           help="largest request body accepted (larger: 413); accepts k/m suffixes")
    option(p, "--max-frame-bytes", type=size, default=1 << 20,
           help="largest SSE frame the audit holds; larger frames count as malformed")
    option(p, "--max-models", type=positive_int, default=100,
           help="distinct `model` label values before new ones are reported as `other`")
    option(p, "--buffered-min-frames", type=positive_int, default=5,
           help="content frames a stream needs before it can be judged buffered")
    option(p, "--buffered-wait-ratio", type=ratio, default=0.8,
           help="buffered when the first content came at least this share of the way "
                "to the last one")
    option(p, "--buffered-max-spacing", type=positive_float, default=0.002,
           help="buffered when content frames came on average closer than this (seconds)")
    option(p, "--buffered-min-ttft", type=positive_float, default=0.05,
           help="a burst after a shorter time to first token is a fast upstream, not buffering")
    option(p, "--log-format", default="json", choices=LOG_FORMATS,
           help="json: one JSON object per line; console: for people")
    option(p, "--workers", type=positive_int, default=1,
           help="processes sharing the port (SO_REUSEPORT); the metrics port merges their metrics")
    option(p, "--recent-streams", type=positive_int, default=DEFAULT_CAPACITY,
           help="audit records each process keeps for GET /streams/recent and /streams/{trace_id}")
    p.set_defaults(run=run)


def config_from(args: argparse.Namespace) -> ServiceConfig:
    thresholds = Thresholds(
        buffered_min_frames=args.buffered_min_frames,
        buffered_wait_ratio=args.buffered_wait_ratio,
        buffered_max_spacing=args.buffered_max_spacing,
        buffered_min_ttft=args.buffered_min_ttft,
        max_frame_bytes=args.max_frame_bytes,
    )
    proxy = ProxyConfig(
        upstream=args.upstream,
        host=args.host,
        port=args.port,
        connect_timeout=args.connect_timeout,
        idle_timeout=args.idle_timeout,
        max_body_bytes=args.max_body_bytes,
        thresholds=thresholds,
    )
    return ServiceConfig(proxy=proxy, metrics_host=args.metrics_host,
                         metrics_port=args.metrics_port, max_models=args.max_models,
                         recent_streams=args.recent_streams)


def run(args: argparse.Namespace) -> int:
    configure_logging(args.log_format)
    if args.workers > 1:
        # Workers drain on their own; the supervisor waits that long and a little more.
        stop_timeout = float(getattr(args, "drain_timeout", 30.0)) + 5.0
        return loop.run(workers.supervise(config_from(args), args.workers, args.log_format,
                                          stop_timeout, listen_error))
    return loop.run(serve(config_from(args)))


def describe_os_error(exc: OSError) -> str:
    """Why a socket could not be bound, in a few words."""
    return {errno.EADDRINUSE: "address already in use",
            errno.EADDRNOTAVAIL: "address not available",
            errno.EACCES: "permission denied"}.get(exc.errno or 0, exc.strerror or str(exc))


def listen_error(exc: OSError, config: ServiceConfig) -> str:
    return (f"cannot listen on {config.proxy.host}:{config.proxy.port} or metrics "
            f"{config.metrics_host}:{config.metrics_port}: {describe_os_error(exc)}")


async def serve(config: ServiceConfig, on_started: Callable[[int], None] | None = None) -> int:
    """Run one proxy until SIGTERM/SIGINT; `on_started(metrics_port)` once it listens."""
    service = Service(config)
    try:
        await service.start()
    except OSError as exc:
        print(f"sse-audit-proxy: error: {listen_error(exc, config)}", file=sys.stderr)
        return 1
    log = structlog.get_logger("sse_audit_proxy")
    log.info("proxy_started", listen=f"http://{config.proxy.host}:{service.proxy.port}",
             upstream=str(config.proxy.upstream),
             metrics=f"http://{config.metrics_host}:{service.metrics_port}/metrics")
    if on_started is not None:
        on_started(service.metrics_port)
    stop = asyncio.Event()
    running = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        running.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("proxy_stopping")
    await service.close()
    return 0
