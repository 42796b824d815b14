"""Readiness: the proxy is ready once it has reached its upstream, a connection, once.

A typo in `--upstream` (a name that does not resolve, a wrong port) made every instance
ready: a Kubernetes rollout completed and every request got `502`, until an alert fired
minutes later (nginx behaves so too). Until a connection to the baseline upstream has been
made, `/readyz` answers `503` and `upstream_unreachable` says why. The first `/readyz` starts
the tries (one a second until one succeeds) and waits for the first up to READY_WAIT: an
instance that nothing asks is never made to connect ahead of a request. A proxy connects
through its pool, as a request would (a name's addresses raced, TLS handshake and certificate
check included), and keeps the connection for the first request; the `--workers` supervisor,
which has no pool of its own, connects the same way (TLS included) and closes it. After that,
readiness no longer follows the upstream: an upstream down later is `502`s and alerts, not
instances taken out of the load balancer. A connection a request made counts as well.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Awaitable, Callable

import structlog
from yarl import URL

from sse_audit_proxy.server.upstream import Pool, Target, TLSError, Unreachable

# Between two tries while the upstream cannot be reached.
RETRY_SECONDS = 1.0
# How long `/readyz` waits for a try under way (Kubernetes' probe gives up after 1 s).
READY_WAIT = 0.5
# Distinct reasons logged while the upstream cannot be reached: the rest go unsaid.
MAX_REASONS = 16

_log = structlog.get_logger("sse_audit_proxy")


class UpstreamReach:
    """Tries `connect()` until it succeeds once; `reached` says whether it has. Without one,
    a connection to `upstream` (with TLS over `tls` for https), closed at once."""

    def __init__(
        self,
        upstream: URL,
        connect_timeout: float,
        connect: Callable[[], Awaitable[None]] | None = None,
        tls: ssl.SSLContext | None = None,
        reached_before: Callable[[], bool] | None = None,
    ) -> None:
        self._scheme = upstream.scheme
        self._tls = tls if upstream.scheme == "https" else None
        self._host = upstream.host or ""
        self._port = upstream.port or (443 if upstream.scheme == "https" else 80)
        self._timeout = connect_timeout
        self._connect = connect or self._tcp
        # Whether requests already made a connection (a proxy first asked after it served
        # traffic, its upstream down by then, was not ready: an outside review).
        self._reached_before = reached_before
        self.reached = False
        self._task: asyncio.Task[None] | None = None

    async def check(self) -> bool:
        """Whether the upstream has been reached; the first call starts the tries, and each
        waits up to READY_WAIT for one under way."""
        if self.reached or (self._reached_before is not None and self._reached_before()):
            self.reached = True
            return True
        task = self._task
        if task is None:
            task = self._task = asyncio.get_running_loop().create_task(self._run())
        await asyncio.wait({task}, timeout=READY_WAIT)
        return self.reached

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _tcp(self) -> None:
        conn = await Pool(self._timeout).acquire(Target(self._scheme, self._host, self._port, self._tls))
        conn.close()

    async def _run(self) -> None:
        # Each (reason, detail) once: an upstream whose failures alternate (backends half way
        # through a certificate rotation) logged a line a second (a second review).
        said: set[tuple[str, str]] = set()
        while True:
            try:
                await self._connect()
            except Exception as exc:  # what a request's connect raises, or a bare one's
                cause = exc.__cause__ if isinstance(exc.__cause__, OSError) else exc
                reason = type(cause).__name__  # never an OSError's text: it may quote a path
                detail = _detail(exc)
                if (reason, detail) not in said and len(said) < MAX_REASONS:
                    said.add((reason, detail))
                    _log.warning(
                        "upstream_unreachable",
                        upstream=f"{self._host}:{self._port}",
                        reason=reason,
                        **({"detail": detail} if detail else {}),
                        retry_s=RETRY_SECONDS,
                    )
                await asyncio.sleep(RETRY_SECONDS)
                continue
            self.reached = True
            if said:
                _log.info("upstream_reached", upstream=f"{self._host}:{self._port}")
            return


def _detail(exc: Exception) -> str:
    """What the operator needs to tell one failure of a kind from another: the certificate
    check's message (a missing CA and a name the certificate does not hold were both just
    `TLSError`, and a pod never ready said no more), or a refused connect in words."""
    if isinstance(exc, TLSError):
        return exc.reason
    if isinstance(exc, Unreachable):
        return exc.why or ""
    return ""
