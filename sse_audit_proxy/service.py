"""Wires a running proxy: the proxy server, its sinks and the metrics port."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from aiohttp import web
from prometheus_client import CollectorRegistry

from .admin import admin_app
from .logs import LogSink
from .metrics import Metrics
from .proxy import Proxy, ProxyConfig, Sink


@dataclass(slots=True, frozen=True)
class ServiceConfig:
    proxy: ProxyConfig
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9464
    max_models: int = 100


class Service:
    def __init__(
        self,
        config: ServiceConfig,
        registry: CollectorRegistry | None = None,
        extra_sinks: Sequence[Sink] = (),
    ) -> None:
        self.config = config
        self.registry = registry if registry is not None else CollectorRegistry()
        self.metrics = Metrics(self.registry, max_models=config.max_models)
        self.proxy = Proxy(config.proxy, [self.metrics, LogSink(), *extra_sinks])
        self._admin: web.AppRunner | None = None
        self.metrics_port = config.metrics_port
        self.draining = False

    async def start(self) -> None:
        self._admin = web.AppRunner(admin_app(self.registry, lambda: not self.draining),
                                    access_log=None, handle_signals=False)
        await self._admin.setup()
        site = web.TCPSite(self._admin, self.config.metrics_host, self.config.metrics_port)
        try:
            await site.start()
            await self.proxy.start()
        except BaseException:
            await self.close()
            raise
        sockets = site._server.sockets if site._server is not None else ()  # type: ignore[union-attr]
        if sockets:
            self.metrics_port = sockets[0].getsockname()[1]

    async def close(self, drain_timeout: float | None = None) -> None:
        """Drain: /readyz turns 503 at once, the proxy finishes what it can, then stops."""
        self.draining = True
        await self.proxy.close(drain_timeout)
        if self._admin is not None:
            await self._admin.cleanup()
