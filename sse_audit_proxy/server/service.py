"""Wires a running proxy: the proxy server, its sinks and the metrics port."""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, ProcessCollector

from sse_audit_proxy.server import inspector
from sse_audit_proxy.server.admin import DRAINING, READY, UNREACHED, admin_app
from sse_audit_proxy.server.canary import CanaryConfig
from sse_audit_proxy.server.canary_control import CanaryControl, build_router
from sse_audit_proxy.server.inbound import GuardedAppRunner
from sse_audit_proxy.server.listen import bind, listen
from sse_audit_proxy.server.lookup import LocalSource, add_routes
from sse_audit_proxy.server.proxy import Proxy, ProxyConfig
from sse_audit_proxy.server.reach import UpstreamReach
from sse_audit_proxy.server.recording import Sink
from sse_audit_proxy.sinks.logs import LogSink, on_dropped_line
from sse_audit_proxy.sinks.metrics import Metrics
from sse_audit_proxy.sinks.recent import DEFAULT_CAPACITY, RecentStreams
from sse_audit_proxy.sinks.redaction import Redactor


@dataclass(slots=True, frozen=True)
class ServiceConfig:
    proxy: ProxyConfig
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9464
    max_models: int = 100
    recent_streams: int = DEFAULT_CAPACITY
    canary: CanaryConfig = field(default_factory=CanaryConfig)
    canary_state_file: str | None = None  # --workers: where a trip is shared between workers
    secret_headers: tuple[str, ...] = ()  # --secret-headers: also redacted in evidence
    admin_hosts: tuple[str, ...] = ()  # --admin-hosts: Host names that may read stream records
    # --workers: the supervisor's metrics URL, the one to scrape (a worker's port is private)
    scraped_url: str | None = None


class Service:
    def __init__(
        self,
        config: ServiceConfig,
        registry: CollectorRegistry | None = None,
        extra_sinks: Sequence[Sink] = (),
    ) -> None:
        self.config = config
        if registry is None:  # its own: with the process's figures (open_fds, max_fds, ...)
            registry = CollectorRegistry()
            ProcessCollector(registry=registry)
        self.registry = registry
        # --workers: the label caps start from what earlier workers' files hold (workers.py).
        multiprocess_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        router = build_router(str(config.proxy.upstream), config.canary)
        sides = [side.name for side in (router.baseline, router.canary) if side is not None]
        self.metrics = Metrics(
            self.registry, max_models=config.max_models, multiprocess_dir=multiprocess_dir, sides=sides
        )
        on_dropped_line(self.metrics.log_line_dropped)
        self.recent = RecentStreams(config.recent_streams)
        self.canary = CanaryControl(router, config.canary, self.registry, config.canary_state_file)
        self.instance = f"{socket.gethostname()}/{os.getpid()}"  # who relayed, in evidence
        log = LogSink(config.secret_headers, self.instance)
        self.proxy = Proxy(
            config.proxy,
            [self.metrics, log, self.recent, self.canary, *extra_sinks],
            on_connection_closed=self.metrics.connection_closed,
            router=router,
        )
        self._admin: GuardedAppRunner | None = None
        self._lookups: LocalSource | None = None
        self.metrics_port = config.metrics_port
        self.draining = False
        self.reach = UpstreamReach(
            config.proxy.upstream,
            config.proxy.connect_timeout,
            self.proxy.reach,
            reached_before=self.proxy.reached,
        )

    async def readiness(self) -> str:
        if self.draining:
            return DRAINING
        return READY if await self.reach.check() else UNREACHED

    async def start(self) -> None:
        app = admin_app(self.registry, self.readiness, self.config.admin_hosts)
        source = self._lookups = LocalSource(self.recent, Redactor(self.config.secret_headers), self.instance)
        add_routes(app, source)
        inspector.add_routes(app, source)
        # Same head limits, timeouts and quiet errors as the proxy port: a scraper or a probe
        # is no more trusted than a client.
        self._admin = GuardedAppRunner(
            app,
            access_log=None,
            handle_signals=False,
            header_timeout=self.config.proxy.header_timeout,
            keepalive_timeout=self.config.proxy.keepalive_timeout,
        )
        await self._admin.setup()
        try:
            cfg = self.config
            host, port = cfg.metrics_host, cfg.metrics_port
            started = listen(self._admin, host, port)
            self.metrics_port = await bind("metrics", "--metrics-port", host, port, started)
            await bind("proxy", "--port", cfg.proxy.host, cfg.proxy.port, self.proxy.start())
            self.canary.start()
        except BaseException:
            await self.close()
            raise

    async def close(self, drain_timeout: float | None = None) -> int:
        """Drain: /readyz turns 503 at once, the proxy finishes what it can, then stops;
        returns how many requests the drain's end cut."""
        self.draining = True
        if self._lookups is not None:
            self._lookups.close()  # lookups still queued are not built: the drain is for streams
        await self.reach.close()
        await self.canary.close()
        cut = await self.proxy.close(drain_timeout)
        if self._admin is not None:
            await self._admin.cleanup()
        return cut
