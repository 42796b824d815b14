"""Accepting requests from peers that may be hostile: head limits and timeouts, quiet errors.

aiohttp's low-level server for the metrics port, with three changes (the proxy port has its
own server, http_server.py, with the same guards and limits, which are defined here):

- a header timeout: a request head (line and fields) must arrive whole within
  `header_timeout` of its first byte (of the connection, for the first request), or the
  connection is closed. aiohttp has only a keep-alive timeout, which a client sending one
  header byte every few seconds never trips (slowloris);
- closes for either timeout are reported (`on_connection_closed(reason)`), so an operator
  sees an attack in the metrics;
- a request the parser refuses gets a generic answer: aiohttp's default logs the parser's
  message and echoes it in the body, and that message can quote a header line, API key
  included.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import http_exceptions, web

from sse_audit_proxy.sinks.metrics import HEADER_TIMEOUT, KEEPALIVE_TIMEOUT

# Request head limits (aiohttp's parser enforces them before any handler runs). One field
# may hold a long JWT bearer token; nothing legitimate needs hundreds of headers.
MAX_REQUEST_LINE = 8190
MAX_FIELD_SIZE = 16384
MAX_HEADERS = 100
HEAD_LIMITS: dict[str, int] = {
    "max_line_size": MAX_REQUEST_LINE,
    "max_field_size": MAX_FIELD_SIZE,
    "max_headers": MAX_HEADERS,
}
# nginx's defaults: client_header_timeout 60 s, client_body_timeout 60 s, keepalive_timeout 75 s.
DEFAULT_HEADER_TIMEOUT = 60.0
DEFAULT_BODY_TIMEOUT = 60.0
DEFAULT_KEEPALIVE_TIMEOUT = 75.0


ParseErrorAnswer = Callable[[web.BaseRequest, int, BaseException | None], web.StreamResponse]


def parse_error_answer(status: int, exc: BaseException | None) -> tuple[int, str, str]:
    """(status, code, message) for a request head the parser refused. Nothing of the
    parser's own message is used: it can quote a header line."""
    if (
        status == 431
        or isinstance(exc, http_exceptions.LineTooLong)
        or (isinstance(exc, http_exceptions.BadHttpMessage) and "headers" in exc.message)
    ):
        return 431, "request_header_too_large", "request line or headers exceed the limits"
    if status == 505:
        return 505, "http_version_not_supported", "the proxy serves HTTP/1.0 and HTTP/1.1"
    if status == 503:
        return 503, "too_many_connections", "the proxy holds as many connections as it can: try again"
    if status >= 500:
        return status, "proxy_error", "the server failed to handle the request"
    # A refusal of ours that says why in words of our own (never the parser's): a missing Host.
    return status, "invalid_http_request", getattr(exc, "public_message", "malformed HTTP request")


def _generic_answer(request: web.BaseRequest, status: int, exc: BaseException | None) -> web.StreamResponse:
    status, code, message = parse_error_answer(status, exc)
    body = orjson.dumps({"error": {"message": message, "code": code}})
    resp = web.Response(status=status, body=body, content_type="application/json")
    resp.force_close()
    return resp


class GuardedServer(web.Server):
    """aiohttp's low-level server, its connections handled by GuardedRequestHandler."""

    def __init__(
        self,
        handler: Any,
        *,
        header_timeout: float = DEFAULT_HEADER_TIMEOUT,
        on_parse_error: ParseErrorAnswer = _generic_answer,
        on_connection_closed: Callable[[str], None] | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("keepalive_timeout", DEFAULT_KEEPALIVE_TIMEOUT)
        for name, value in HEAD_LIMITS.items():
            kwargs.setdefault(name, value)
        super().__init__(handler, **kwargs)
        self.header_timeout = header_timeout
        self.on_parse_error = on_parse_error
        self.on_connection_closed = on_connection_closed

    def __call__(self) -> web.RequestHandler:
        return GuardedRequestHandler(self, loop=self._loop, **self._kwargs)

    def closed(self, reason: str) -> None:
        if self.on_connection_closed is not None:
            self.on_connection_closed(reason)


class GuardedRequestHandler(web.RequestHandler):
    """One client connection: aiohttp's handler plus a header timeout and quiet errors."""

    _head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._arm_header_timer()  # the first head is timed from the connection (as nginx)

    def data_received(self, data: bytes) -> None:
        # Between requests (start() waits for the next message): these bytes begin a head.
        idle = self._waiter is not None and not self._messages
        count = self._request_count
        super().data_received(data)
        if self._request_count != count:
            self._disarm_header_timer()  # a whole head arrived; the body is not timed here
        elif idle and data and self._head_timer is None:
            self._arm_header_timer()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm_header_timer()
        super().connection_lost(exc)

    def _arm_header_timer(self) -> None:
        server = self._manager
        if not isinstance(server, GuardedServer) or self._force_close:
            return
        deadline = self._loop.time() + server.header_timeout
        self._head_timer = self._loop.call_at(deadline, self._header_timed_out)
        # Once a head has begun the keep-alive timer no longer applies (as nginx): aiohttp
        # re-arms it for its close time when it fires early, so push that past the deadline.
        self._next_keepalive_close_time = max(self._next_keepalive_close_time, deadline + 1.0)

    def _disarm_header_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _header_timed_out(self) -> None:
        self._head_timer = None
        server = self._manager
        if self._force_close or self.transport is None or not isinstance(server, GuardedServer):
            return
        server.closed(HEADER_TIMEOUT)
        self.force_close()  # nothing to answer: there is no request yet (nginx logs a 408)

    def _process_keepalive(self) -> None:
        closed = self._force_close
        server = self._manager
        super()._process_keepalive()
        if self._force_close and not closed and isinstance(server, GuardedServer):
            server.closed(KEEPALIVE_TIMEOUT)

    async def finish_response(
        self, request: web.BaseRequest, resp: web.StreamResponse, start_time: float | None
    ) -> tuple[web.StreamResponse, bool]:
        result = await super().finish_response(request, resp, start_time)
        if not resp.keep_alive and _awaits_continue(request) and request.content.total_bytes == 0:
            # Refused before any 100 Continue: the client will not send the body, so do not
            # linger up to aiohttp's lingering_time waiting for it; close at once.
            request.content.feed_eof()
        return result

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        # Never aiohttp's default: it logs the parser's message and echoes it in the body.
        if request.writer.output_size > 0:
            raise ConnectionError("response already started; cannot send an error")
        server = self._manager
        if not isinstance(server, GuardedServer):
            return _generic_answer(request, status, exc)
        return server.on_parse_error(request, status, exc)


class GuardedAppRunner(web.AppRunner):
    """An AppRunner (the metrics port) whose connections get the same guards."""

    def __init__(
        self, app: web.Application, *, header_timeout: float = DEFAULT_HEADER_TIMEOUT, **kwargs: Any
    ) -> None:
        super().__init__(app, **kwargs)
        self._header_timeout = header_timeout

    async def _make_server(self) -> web.Server:
        plain = await super()._make_server()  # runs the app's start-up, freezes it
        return GuardedServer(
            plain.request_handler,
            request_factory=plain.request_factory,
            header_timeout=self._header_timeout,
            **self._kwargs,
        )


def _awaits_continue(request: web.BaseRequest) -> bool:
    return (
        request.version >= (1, 1)
        and request.body_exists
        and request.headers.get("Expect", "").strip().lower() == "100-continue"
    )
