"""The reverse proxy: forwards every request and response unchanged, audits event streams.

This is the only module that touches sockets and clocks. For each upstream body chunk it
writes to the client first and feeds the audit second; the audit never blocks or alters
what the client receives, and a failure inside it is logged and ignored.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import aiohttp
import orjson
import structlog
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from .audit import End, StreamAudit, Thresholds
from .dialects import dialect_for_route, route_for_path
from .record import AuditRecord
from .request_info import RequestInfo, trace_id_from

# RFC 9110 section 7.6.1: connection-specific fields are not forwarded.
HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer",
    "upgrade", "proxy-authenticate", "proxy-authorization",
})
# Recomputed for the upstream hop: Host names the upstream; we send the body we read whole.
_REQUEST_DROP = HOP_BY_HOP | {"host", "content-length", "expect"}
_RESPONSE_DROP = HOP_BY_HOP
TRACE_HEADER = "X-Client-Request-Id"

_log = structlog.get_logger("sse_audit_proxy")


class Sink(Protocol):
    """Something that hangs off the end of a stream: metrics, logs, recent-streams buffer."""

    def stream_started(self, route: str) -> None: ...
    def stream_ended(self, route: str) -> None: ...
    def record(self, rec: AuditRecord) -> None: ...


@dataclass(slots=True, frozen=True)
class ProxyConfig:
    upstream: URL
    host: str = "127.0.0.1"
    port: int = 8080
    connect_timeout: float = 10.0
    idle_timeout: float = 300.0
    max_body_bytes: int = 32 << 20
    thresholds: Thresholds = field(default_factory=Thresholds)


class _BodyTooLarge(Exception):
    pass


def _forward_headers(headers: CIMultiDictProxy[str], drop: frozenset[str]) -> CIMultiDict[str]:
    named = {t.strip().lower() for t in headers.get("Connection", "").split(",")}
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in headers.items():
        lower = name.lower()
        if lower not in drop and lower not in named:
            out.add(name, value)
    return out


def error_body(message: str, type_: str, code: str) -> bytes:
    """An OpenAI-shaped error, so SDKs surface the proxy's own failures like upstream ones."""
    return orjson.dumps({"error": {"message": message, "type": type_, "code": code}})


class Proxy:
    def __init__(self, config: ProxyConfig, sinks: Sequence[Sink]) -> None:
        self.config = config
        self._sinks = tuple(sinks)
        self._base = str(config.upstream).rstrip("/")
        self._session: aiohttp.ClientSession | None = None
        self._runner: web.ServerRunner | None = None
        self._closing = False
        self.port = config.port

    async def start(self) -> None:
        cfg = self.config
        connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, ssl=ssl.create_default_context())
        self._session = aiohttp.ClientSession(
            connector=connector,
            auto_decompress=False,  # forward the upstream's bytes exactly as encoded
            cookie_jar=aiohttp.DummyCookieJar(),  # never carry one client's cookies to another
            skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
            timeout=aiohttp.ClientTimeout(
                total=None, sock_connect=cfg.connect_timeout, sock_read=cfg.idle_timeout
            ),
            trust_env=False,
        )
        server = web.Server(
            self.handle,
            handler_cancellation=True,  # a vanished client cancels its handler at once
            auto_decompress=False,
            access_log=None,
        )
        self._runner = web.ServerRunner(server, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, cfg.host, cfg.port)
        await site.start()
        sockets = site._server.sockets if site._server is not None else ()  # type: ignore[union-attr]
        if sockets:
            self.port = sockets[0].getsockname()[1]

    async def close(self) -> None:
        self._closing = True
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    # One request ----------------------------------------------------------------------

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        started = time.monotonic()
        wall = time.time()
        route = route_for_path(request.path)
        trace_id, from_client = trace_id_from(request.headers)
        rec = AuditRecord(trace_id, route, request.method, "unknown", 0, wall, 0.0, 0, None)

        raw_path = request.raw_path
        if request.method == "CONNECT" or not raw_path.startswith("/"):
            return await self._refuse(request, rec, started, 400, "only origin-form request "
                                      "targets are proxied", "invalid_request_error",
                                      "unsupported_request_target")
        try:
            body = await self._read_body(request)
        except _BodyTooLarge:
            return await self._refuse(request, rec, started, 413, "request body exceeds "
                                      f"{self.config.max_body_bytes} bytes",
                                      "invalid_request_error", "request_too_large")
        info = RequestInfo.from_body(body)
        rec.model = info.model
        headers = _forward_headers(request.headers, _REQUEST_DROP)
        if not from_client:
            headers[TRACE_HEADER] = trace_id
        url = URL(self._base + raw_path, encoded=True)

        assert self._session is not None
        try:
            upstream = await self._session.request(
                request.method, url, headers=headers, data=body or None, allow_redirects=False
            )
        except Exception as exc:  # noqa: BLE001 - every failure becomes an answer and a record
            return await self._upstream_failed(request, rec, info, started, exc)
        try:
            return await self._respond(request, upstream, rec, info, started)
        finally:
            upstream.release()

    async def _read_body(self, request: web.BaseRequest) -> bytes:
        cap = self.config.max_body_bytes
        if request.content_length is not None and request.content_length > cap:
            raise _BodyTooLarge
        parts: list[bytes] = []
        size = 0
        while chunk := await request.content.readany():
            size += len(chunk)
            if size > cap:
                raise _BodyTooLarge
            parts.append(chunk)
        return b"".join(parts)

    async def _respond(
        self,
        request: web.BaseRequest,
        upstream: aiohttp.ClientResponse,
        rec: AuditRecord,
        info: RequestInfo,
        started: float,
    ) -> web.StreamResponse:
        rec.status = upstream.status
        is_sse = upstream.headers.get("Content-Type", "").lower().startswith("text/event-stream")
        # A stream was asked for, yet no event stream came: maybe an error sent as 200 + JSON.
        # The audit peeks at a bounded start of the body; the client gets it unchanged.
        peek = info.stream and not is_sse and upstream.status < 400
        audit: StreamAudit | None = None
        if is_sse or peek or (info.stream and upstream.status >= 400):
            audit = StreamAudit(
                dialect_for_route(rec.route)(),
                started,
                include_usage=info.include_usage,
                content_encoding=upstream.headers.get("Content-Encoding", ""),
                thresholds=self.config.thresholds,
                event_stream=is_sse,
            )
        headers = _forward_headers(upstream.headers, _RESPONSE_DROP)
        headers[TRACE_HEADER] = rec.trace_id
        resp = web.StreamResponse(status=upstream.status, reason=upstream.reason, headers=headers)
        end = End.UPSTREAM_EOF
        sent = 0
        if is_sse:
            self._notify_started(rec.route)
        try:
            await resp.prepare(request)
            end, sent = await self._relay(upstream, resp, audit if is_sse or peek else None)
        except asyncio.CancelledError:
            end = End.ABORTED if self._closing else End.CLIENT_GONE
            raise
        except ConnectionError:
            end = End.CLIENT_GONE
        finally:
            if end is not End.UPSTREAM_EOF:
                upstream.close()  # stop the gateway generating for nobody
            if end in (End.UPSTREAM_BROKEN, End.IDLE_TIMEOUT) and request.transport is not None:
                # Close without the final chunk so the client sees a cut, not a clean end.
                request.transport.close()
            if is_sse:
                self._notify_ended(rec.route)
            if audit is not None and upstream.status >= 400:
                end = End.UPSTREAM_STATUS
            if peek and audit is not None and not audit.error_document:
                audit = None  # an ordinary answer, not a stream: a plain request record
            self._finish(rec, audit, end, sent, started)
        return resp

    async def _relay(
        self, upstream: aiohttp.ClientResponse, resp: web.StreamResponse, audit: StreamAudit | None
    ) -> tuple[End, int]:
        read = upstream.content.readany
        write = resp.write
        clock = time.monotonic
        sent = 0
        while True:
            try:
                chunk = await read()
            except asyncio.TimeoutError:
                return End.IDLE_TIMEOUT, sent
            except (aiohttp.ClientError, OSError):
                return End.UPSTREAM_BROKEN, sent
            if not chunk:
                return End.UPSTREAM_EOF, sent
            t = clock()
            try:
                await write(chunk)  # forward first
            except ConnectionError:
                return End.CLIENT_GONE, sent
            sent += len(chunk)
            if audit is not None:
                try:
                    audit.feed(chunk, t)  # then look
                except Exception:  # noqa: BLE001 - the audit must never break the stream
                    _log.exception("audit_failed")
                    audit = None

    def _finish(
        self, rec: AuditRecord, audit: StreamAudit | None, end: End, sent: int, started: float
    ) -> None:
        now = time.monotonic()
        rec.duration = now - started
        rec.bytes = sent
        if audit is not None:
            rec.stream = audit.finish(now, end)
        self._emit(rec)

    def _emit(self, rec: AuditRecord) -> None:
        for sink in self._sinks:
            try:
                sink.record(rec)
            except Exception:  # noqa: BLE001 - one broken sink must not starve the others
                _log.exception("sink_failed", sink=type(sink).__name__)

    def _notify_started(self, route: str) -> None:
        for sink in self._sinks:
            sink.stream_started(route)

    def _notify_ended(self, route: str) -> None:
        for sink in self._sinks:
            sink.stream_ended(route)

    # The proxy's own answers ----------------------------------------------------------

    async def _upstream_failed(
        self,
        request: web.BaseRequest,
        rec: AuditRecord,
        info: RequestInfo,
        started: float,
        exc: Exception,
    ) -> web.StreamResponse:
        if isinstance(exc, aiohttp.ConnectionTimeoutError):
            status, code, message = 504, "upstream_connect_timeout", "upstream connect timed out"
        elif isinstance(exc, asyncio.TimeoutError):
            status, code, message = 504, "upstream_timeout", "upstream sent no response in time"
        elif isinstance(exc, (aiohttp.ClientSSLError, ssl.SSLError)):
            status, code, message = 502, "upstream_tls_error", "TLS handshake with upstream failed"
        else:
            status, code, message = 502, "upstream_unreachable", "could not reach upstream"
        rec.error = code
        audit = None
        if info.stream:
            audit = StreamAudit(dialect_for_route(rec.route)(), started)
        end = End.IDLE_TIMEOUT if code == "upstream_timeout" else End.UPSTREAM_STATUS
        return await self._answer(request, rec, started, status, message, "upstream_error", code,
                                  audit, end)

    async def _refuse(
        self, request: web.BaseRequest, rec: AuditRecord, started: float, status: int,
        message: str, type_: str, code: str,
    ) -> web.StreamResponse:
        rec.error = code
        return await self._answer(request, rec, started, status, message, type_, code, None,
                                  End.UPSTREAM_STATUS)

    async def _answer(
        self, request: web.BaseRequest, rec: AuditRecord, started: float, status: int,
        message: str, type_: str, code: str, audit: StreamAudit | None, end: End,
    ) -> web.StreamResponse:
        rec.status = status
        body = error_body(message, type_, code)
        resp = web.Response(status=status, body=body, content_type="application/json",
                            headers={TRACE_HEADER: rec.trace_id})
        self._finish(rec, audit, end, len(body), started)
        return resp
