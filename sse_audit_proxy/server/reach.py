"""Readiness: the proxy is ready once it has reached its upstream, a TCP connection, once.

A typo in `--upstream` (a name that does not resolve, a wrong port) made every instance
ready: a Kubernetes rollout completed and every request got `502`, until an alert fired
minutes later (nginx behaves so too). Until a connection to the baseline upstream has been
made, `/readyz` answers `503` and `upstream_unreachable` says why; the connection is closed at
once (no request is sent). After that, readiness no longer follows the upstream: an upstream
down later is `502`s and alerts, not instances taken out of the load balancer.
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog
from yarl import URL

# Between two tries while the upstream cannot be reached.
RETRY_SECONDS = 1.0

_log = structlog.get_logger("sse_audit_proxy")


class UpstreamReach:
    """Tries to connect to `upstream` until it succeeds once; `reached` says whether it has."""

    def __init__(self, upstream: URL, connect_timeout: float) -> None:
        self._host = upstream.host or ""
        self._port = upstream.port or (443 if upstream.scheme == "https" else 80)
        self._timeout = connect_timeout
        self.reached = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        said = ""  # the last reason logged: each new one once, not a line a second
        while True:
            try:
                async with asyncio.timeout(self._timeout):
                    _, writer = await asyncio.open_connection(self._host, self._port)
            except (OSError, TimeoutError) as exc:
                reason = type(exc).__name__
                if reason != said:
                    said = reason
                    _log.warning(
                        "upstream_unreachable",
                        upstream=f"{self._host}:{self._port}",
                        reason=reason,
                        retry_s=RETRY_SECONDS,
                    )
                await asyncio.sleep(RETRY_SECONDS)
                continue
            writer.close()  # a plain close: nothing in the upstream's logs but a connection
            self.reached = True
            if said:
                _log.info("upstream_reached", upstream=f"{self._host}:{self._port}")
            return
