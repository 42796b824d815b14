"""Run one proxy process until SIGTERM or SIGINT, draining open streams before it exits."""

from __future__ import annotations

import asyncio
import gc
import resource
import signal
import sys
from collections.abc import Callable

import structlog

from sse_audit_proxy.server.canary_control import describe
from sse_audit_proxy.server.listen import ListenFailed, describe_os_error, http_url
from sse_audit_proxy.server.service import Service, ServiceConfig


def raise_open_files_limit() -> dict[str, int]:
    """Raise the soft open-files limit to the hard one (nginx's worker_rlimit_nofile habit).

    Each client and each upstream connection is a descriptor; a soft limit of 1,024 lets a
    thousand slow or idle connections stop the proxy accepting anyone. Workers inherit it.
    Returns what to log: the limit now, and the one before when it changed.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # An unlimited hard limit may still be refused for the soft one (macOS): cap the ask.
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (OSError, ValueError):
            return {"open_files_limit": soft}
        return {"open_files_limit": target, "open_files_limit_was": soft}
    return {"open_files_limit": soft}


def listen_error(exc: OSError, config: ServiceConfig) -> str:
    if isinstance(exc, ListenFailed):
        return str(exc)
    return (
        f"cannot listen on {config.proxy.host}:{config.proxy.port} or metrics "
        f"{config.metrics_host}:{config.metrics_port}: {describe_os_error(exc)}"
    )


def ignore_hangups(loop: asyncio.AbstractEventLoop) -> None:
    """Shutting down: a SIGHUP from now on (a config reloader during a rollout) is ignored. Its
    handler goes with the loop, and one that came after that, as the interpreter wound down,
    ended a drained process with SIGHUP instead of 0."""
    loop.remove_signal_handler(signal.SIGHUP)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)


async def serve(config: ServiceConfig, on_started: Callable[[int], None] | None = None) -> int:
    """Run one proxy until SIGTERM/SIGINT; `on_started(metrics_port)` once it listens."""
    # Handlers first: a SIGTERM that arrives while starting up still drains and exits 0.
    open_files = raise_open_files_limit()
    stop = asyncio.Event()
    running = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        running.add_signal_handler(sig, stop.set)
    reloads: list[Callable[[], None]] = []
    # SIGHUP re-reads the canary percent (and clears a trip); it no longer ends the process.
    running.add_signal_handler(signal.SIGHUP, lambda: [reload() for reload in reloads])
    service = Service(config)
    reloads.append(service.canary.reload)
    try:
        await service.start()
    except OSError as exc:
        print(f"sse-audit-proxy: error: {listen_error(exc, config)}", file=sys.stderr)
        return 1
    # Everything built so far (modules, the app, the registry) lives until exit: move it out
    # of the collector's way, so full collections only walk what streams allocate and the
    # loop stalls less while they run (measured: the longest full collection under the
    # benchmark's 1,000 streams went from 66 ms to 26 ms).
    gc.collect()
    gc.freeze()
    log = structlog.get_logger("sse_audit_proxy")
    # A worker's own metrics port is private to it (the supervisor scrapes it and serves the
    # sum): it is `worker_admin`, and `metrics` in every `proxy_started` line the one to scrape.
    admin = http_url(config.metrics_host, service.metrics_port)
    log.info(
        "proxy_started",
        listen=http_url(config.proxy.host, service.proxy.port),
        upstream=str(config.proxy.upstream),
        metrics=config.scraped_url or admin + "/metrics",
        **({"worker_admin": admin} if config.scraped_url else {}),
        **open_files,
        **describe(service.proxy.router),
        **({"canary_guard": config.canary.guard} if service.proxy.router.canary is not None else {}),
    )
    if on_started is not None:
        on_started(service.metrics_port)
    await stop.wait()
    ignore_hangups(running)
    log.info("proxy_draining", in_flight=service.proxy.in_flight, drain_timeout_s=config.proxy.drain_timeout)
    # Counted in sse_audit_streams_cut_total too, but as the process ends: no scrape sees it.
    log.info("proxy_stopped", cut=await service.close())
    return 0
