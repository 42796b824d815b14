"""`serve --workers N`: N proxy processes on one port, one metrics port that speaks for all.

The supervisor (this process) reserves the proxy port, then starts N workers that each listen
on it with SO_REUSEPORT, so the kernel spreads connections across them. Each worker is a
whole single-process proxy (`serve.serve`) whose metrics live in prometheus-client's
multiprocess files; the supervisor serves the public metrics port: `/metrics` merges every
worker's files, `/readyz` is ready while every worker is, and `/streams/...` asks each
worker's private metrics port (127.0.0.1, any free port) and merges the answers.

A worker that dies is replaced; its counters stay in its files, so totals never go back.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import multiprocessing
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess

import structlog
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector

from sse_audit_proxy.server import inspector, loop
from sse_audit_proxy.server.admin import DRAINING, READY, UNREACHED, WORKERS_NOT_READY, admin_app
from sse_audit_proxy.server.canary import Router
from sse_audit_proxy.server.canary_control import build_router, describe, read_percent_file
from sse_audit_proxy.server.inbound import GuardedAppRunner
from sse_audit_proxy.server.listen import ListenFailed, http_url, listen
from sse_audit_proxy.server.lookup import WorkersSource, add_routes
from sse_audit_proxy.server.proxy import upstream_ssl
from sse_audit_proxy.server.reach import UpstreamReach
from sse_audit_proxy.server.run import ignore_hangups, serve
from sse_audit_proxy.server.service import ServiceConfig
from sse_audit_proxy.sinks.logs import flush_logs, share_output

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
START_TIMEOUT = 30.0
RESTART_DELAY = 1.0
GATHER_DELAY = 0.3
_log = structlog.get_logger("sse_audit_proxy")


class WorkerFailed(Exception):
    pass


def reserve_port(host: str, port: int) -> socket.socket:
    """Bind (not listen) with SO_REUSEPORT: fixes the port workers share, fails early if taken."""
    family, type_, proto, _, addr = socket.getaddrinfo(
        host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    if port:
        # First without SO_REUSEPORT: a port another process holds with it (a second proxy
        # with --workers, started by mistake) would be shared, the two splitting the traffic.
        with socket.socket(family, type_, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(addr)
    sock = socket.socket(family, type_, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(addr)
    except OSError:
        sock.close()
        raise
    return sock


def _worker_main(
    index: int, config: ServiceConfig, setup_logging: Callable[[], None], conn: Connection
) -> None:
    """A worker process: the ordinary single-process proxy, reporting its private metrics port."""
    _die_with_parent()
    setup_logging()
    structlog.contextvars.bind_contextvars(worker=index)

    def started(port: int) -> None:
        conn.send(port)
        conn.close()

    try:
        code = loop.run(serve(config, on_started=started))
    finally:
        flush_logs()  # a spawned process ends without running atexit's handlers
    sys.exit(code)


def _logging_shared(setup_logging: Callable[[], None], lock_path: str) -> None:
    """A worker's logging: as the supervisor's, its lines written whole beside theirs."""
    setup_logging()
    share_output(lock_path)


def _die_with_parent() -> None:
    """Linux: get SIGTERM if the supervisor is killed, so no orphan keeps serving the port."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None).prctl(pr_set_pdeathsig, signal.SIGTERM)


class Worker:
    def __init__(self, index: int, process: BaseProcess, conn: Connection) -> None:
        self.index = index
        self.process = process
        self.conn = conn
        self.admin_port: int | None = None
        self.buried = False  # its exit seen, logged and cleaned up

    def poll_started(self) -> bool:
        if self.admin_port is None and self.conn.poll():
            try:
                self.admin_port = int(self.conn.recv())
            except (EOFError, OSError):
                return False
        return self.admin_port is not None


class _WorkerExits(Collector):
    """`sse_audit_worker_exits_total`, the supervisor's own: a worker killed (OOM, a crash)
    cuts its streams, which get no record, and only a log line said so (an outside review)."""

    def __init__(self, pool: Pool) -> None:
        self._pool = pool

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "sse_audit_worker_exits",
            "Workers (--workers) that died and were replaced; their open streams were cut "
            "without records. The worker_exited log line gives each one's exit status.",
        )
        family.add_metric((), self._pool.exits)
        yield family


class Pool:
    def __init__(
        self, config: ServiceConfig, size: int, setup_logging: Callable[[], None], metrics_dir: str
    ) -> None:
        self._config = config
        self._size = size
        self._setup_logging = setup_logging
        self._dir = metrics_dir
        self._ctx = multiprocessing.get_context("spawn")  # fresh interpreters: no inherited loop
        self.workers: list[Worker] = []
        self.stopping = False
        self.exits = 0  # workers that died while the pool was not stopping

    def scraped_at(self, url: str) -> None:
        """The supervisor's metrics URL, which each worker's start line names as `metrics`."""
        self._config = replace(self._config, scraped_url=url)

    def _spawn(self, index: int) -> Worker:
        try:  # out of file descriptors (the pipe, the process's own) or of processes
            parent, child = self._ctx.Pipe(duplex=False)
        except OSError as exc:
            raise WorkerFailed(f"cannot start worker {index}: {exc.strerror or exc}") from None
        process = self._ctx.Process(
            target=_worker_main,
            name=f"sse-audit-proxy-worker-{index}",
            args=(index, self._config, self._setup_logging, child),
            daemon=True,
        )
        # A terminal's Ctrl-C reaches every process of its group: a worker still importing printed
        # a traceback, and the supervisor called its death a failure to start (an outside
        # review). A worker starts with SIGINT ignored (Python then installs no handler of its
        # own for it) until serve's handler takes it; the supervisor stops it with SIGTERM.
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            process.start()
        except OSError as exc:
            parent.close()
            child.close()
            raise WorkerFailed(f"cannot start worker {index}: {exc.strerror or exc}") from None
        finally:
            if previous is not None:  # (None: a handler not set from Python, none to restore)
                signal.signal(signal.SIGINT, previous)
        child.close()
        return Worker(index, process, parent)

    async def _until_started(self, worker: Worker) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while not worker.poll_started():
            if not worker.process.is_alive():
                raise WorkerFailed(
                    f"worker {worker.index} exited with status "
                    f"{worker.process.exitcode} before it was listening"
                )
            if time.monotonic() > deadline:
                raise WorkerFailed(f"worker {worker.index} did not start in {START_TIMEOUT:.0f} s")
            await asyncio.sleep(0.05)

    async def start(self) -> None:
        self.workers = []
        for i in range(self._size):  # one by one: those started are stopped if one fails
            self.workers.append(self._spawn(i))
        for worker in self.workers:
            await self._until_started(worker)

    def ready(self) -> bool:
        return not self.stopping and all(
            w.admin_port is not None and w.process.is_alive() for w in self.workers
        )

    def admin_urls(self) -> list[str]:
        return [
            f"http://127.0.0.1:{w.admin_port}"
            for w in self.workers
            if w.admin_port is not None and w.process.is_alive()
        ]

    def _bury(self, worker: Worker) -> None:
        worker.buried = True
        worker.process.join(0)
        if worker.process.pid is not None:  # its live gauges (active streams) stop counting
            mark_process_dead(worker.process.pid, self._dir)  # type: ignore[no-untyped-call]
        worker.conn.close()

    def _dead(self) -> list[int]:
        return [i for i, w in enumerate(self.workers) if not w.process.is_alive()]

    async def watch(self) -> None:
        """Replace workers that die while the pool is not stopping: all that died together
        at once (one by one, three took four seconds, their exits logged late)."""
        while not self.stopping:
            await asyncio.sleep(0.2)
            if not self._dead() or self.stopping:
                continue
            # Workers killed together (`pkill`, the OOM killer) can take a while each to be
            # reaped on a loaded host: a second look gathers them into one round.
            await asyncio.sleep(GATHER_DELAY)
            if self.stopping:  # stop() says who died before it
                return
            dead = self._dead()
            for i in dead:
                if not self.workers[i].buried:  # else its replacement failed: tried again, not logged
                    self._exited(self.workers[i])
            await asyncio.sleep(RESTART_DELAY)
            if self.stopping:
                return
            await asyncio.gather(*(self._replace(i) for i in dead))

    def _exited(self, worker: Worker) -> None:
        _log.warning(
            "worker_exited", worker=worker.index, pid=worker.process.pid, status=worker.process.exitcode
        )
        self.exits += 1
        self._bury(worker)

    async def _replace(self, i: int) -> None:
        index = self.workers[i].index
        try:
            replacement = self._spawn(index)
            self.workers[i] = replacement
            await self._until_started(replacement)
        except WorkerFailed as exc:
            if not self.stopping:  # else the shutdown that began meanwhile ended it
                _log.error("worker_restart_failed", worker=index, reason=str(exc))

    def reload(self, state_file: str) -> None:
        """SIGHUP: clear a shared canary trip, then have every worker re-read its percent."""
        with contextlib.suppress(FileNotFoundError):
            os.remove(state_file)
        for worker in self.workers:
            # Only a worker that is listening has its SIGHUP handler in place.
            if worker.admin_port is not None and worker.process.is_alive() and worker.process.pid is not None:
                os.kill(worker.process.pid, signal.SIGHUP)
        _log.info("proxy_reloading", workers=len(self.workers))

    async def stop(self, timeout: float) -> None:
        """SIGTERM every worker (each drains on its own), then wait; SIGKILL after `timeout`."""
        self.stopping = True
        for worker in self.workers:
            if worker.process.is_alive():
                worker.process.terminate()
            elif not worker.buried:  # died before the shutdown, not yet seen by watch()
                self._exited(worker)
        deadline = time.monotonic() + timeout
        while any(w.process.is_alive() for w in self.workers) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for worker in self.workers:
            if worker.process.is_alive():
                _log.warning("worker_killed", worker=worker.index, pid=worker.process.pid)
                worker.process.kill()
            worker.process.join(5)
            self._bury(worker)


def _error(message: str) -> int:
    print(f"sse-audit-proxy: error: {message}", file=sys.stderr)
    return 1


async def supervise(
    config: ServiceConfig,
    size: int,
    setup_logging: Callable[[], None],
    stop_timeout: float,
    listen_error: Callable[[OSError, ServiceConfig], str],
) -> int:
    try:
        reservation = reserve_port(config.proxy.host, config.proxy.port)
    except OSError as exc:
        failed = ListenFailed("proxy", "--port", config.proxy.host, config.proxy.port, exc)
        return _error(listen_error(failed, config))
    port = int(reservation.getsockname()[1])
    try:
        metrics_dir = tempfile.mkdtemp(prefix="sse-audit-proxy-metrics-")
        # A canary trip in one worker reaches the others through this file (canary_control.py).
        state_dir = tempfile.mkdtemp(prefix="sse-audit-proxy-canary-")
    except OSError as exc:  # no writable temporary directory, or out of file descriptors
        reservation.close()
        return _error(f"cannot make the workers' shared directory: {exc.strerror or exc}")
    os.environ[MULTIPROC_ENV] = metrics_dir  # read by prometheus-client as each worker imports it
    state_file = os.path.join(state_dir, "tripped.json")
    # Every process writes its lines to the one stdout, each whole under a lock of this file.
    log_lock = os.path.join(state_dir, "log.lock")
    try:
        share_output(log_lock)
    except OSError as exc:
        reservation.close()
        shutil.rmtree(metrics_dir, ignore_errors=True)
        shutil.rmtree(state_dir, ignore_errors=True)
        return _error(f"cannot make the workers' shared directory: {exc.strerror or exc}")
    setup_logging = functools.partial(_logging_shared, setup_logging, log_lock)
    worker_config = replace(
        config,
        proxy=replace(config.proxy, port=port, reuse_port=True),
        metrics_host="127.0.0.1",
        metrics_port=0,
        canary_state_file=state_file,
    )
    pool = Pool(worker_config, size, setup_logging, metrics_dir)
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=metrics_dir)  # type: ignore[no-untyped-call]
    registry.register(_WorkerExits(pool))
    reach = UpstreamReach(config.proxy.upstream, config.proxy.connect_timeout, tls=upstream_ssl(config.proxy))

    async def readiness() -> str:
        if not pool.ready():
            return DRAINING if pool.stopping else WORKERS_NOT_READY
        return READY if await reach.check() else UNREACHED

    app = admin_app(registry, readiness, config.admin_hosts)
    source = WorkersSource(pool.admin_urls)
    add_routes(app, source)
    inspector.add_routes(app, source)
    runner = GuardedAppRunner(
        app,
        access_log=None,
        handle_signals=False,
        header_timeout=config.proxy.header_timeout,
        keepalive_timeout=config.proxy.keepalive_timeout,
    )
    # Handlers first (as serve's): a SIGTERM right after start-up ended the parent at once, with
    # the default action, and its workers were left to the kernel's parent-death signal.
    stop = asyncio.Event()
    running = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        running.add_signal_handler(sig, stop.set)
    running.add_signal_handler(signal.SIGHUP, functools.partial(pool.reload, state_file))
    await runner.setup()
    try:
        try:
            metrics_port = await listen(runner, config.metrics_host, config.metrics_port)
        except OSError as exc:
            failed = ListenFailed("metrics", "--metrics-port", config.metrics_host, config.metrics_port, exc)
            return _error(listen_error(failed, config))
        pool.scraped_at(http_url(config.metrics_host, metrics_port, "/metrics"))
        try:
            await pool.start()
        except WorkerFailed as exc:
            await pool.stop(5.0)
            return _error(str(exc))
        _log.info(
            "proxy_started",
            listen=http_url(config.proxy.host, port),
            upstream=str(config.proxy.upstream),
            workers=size,
            metrics=http_url(config.metrics_host, metrics_port, "/metrics"),
            **describe(_sides(config)),
            **({"canary_guard": config.canary.guard} if config.canary.url is not None else {}),
        )
        watcher = asyncio.create_task(pool.watch())
        await stop.wait()
        ignore_hangups(running)
        _log.info("proxy_stopping", workers=size)
        await reach.close()
        await pool.stop(stop_timeout)
        await watcher
        return 0
    finally:
        await runner.cleanup()
        reservation.close()
        shutil.rmtree(metrics_dir, ignore_errors=True)
        shutil.rmtree(os.path.dirname(state_file), ignore_errors=True)


def _sides(config: ServiceConfig) -> Router:
    """The sides as the workers start with them, for the supervisor's start line: the percent
    file's share (it said the flag's, 0, while the workers had read the file's 10)."""
    router = build_router(str(config.proxy.upstream), config.canary)
    if config.canary.url is not None and config.canary.percent_file is not None:
        try:
            percent, _ = read_percent_file(config.canary.percent_file)
        except (OSError, ValueError, UnicodeDecodeError):
            percent = 0.0  # as a worker starts on a file it cannot take
        router.set_percent(percent)
    return router
