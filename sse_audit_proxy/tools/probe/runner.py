"""Runs the gates against one route: sends the requests in order, reads them, judges them."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from yarl import URL

from sse_audit_proxy.cli.options import KEY_HEADER_DEFAULT
from sse_audit_proxy.tools.probe import gates
from sse_audit_proxy.tools.probe.api import Api
from sse_audit_proxy.tools.probe.chat import ChatApi
from sse_audit_proxy.tools.probe.client import Exchange, Sender, is_secret_header, lookup_record, send
from sse_audit_proxy.tools.probe.gates import Gate, ProxyCheck, Status
from sse_audit_proxy.tools.probe.responses import ResponsesApi

CANCEL_AFTER_FRAMES = 3


@dataclass(slots=True, frozen=True)
class Settings:
    """What every route of one run is probed with."""

    model: str
    tools: bool = False
    responses: bool = False
    headers: tuple[tuple[str, str], ...] = ()
    api_key: str | None = None
    key_header: str = KEY_HEADER_DEFAULT
    timeout: float = 60.0


@dataclass(slots=True, frozen=True)
class Target:
    label: str  # "base" or "compare"
    base_url: URL
    trace_prefix: str  # probe-<run id>[-<label>]
    proxy_metrics_url: URL | None = None
    # `probe --side`: the header that asks the proxy for one side (baseline or canary).
    headers: tuple[tuple[str, str], ...] = ()
    side: str | None = None
    api_key: str | None = None  # the route's own (a compare route on another host has its own)
    elsewhere: bool = False  # on another host than --base-url: no secret-named -H header


@dataclass(slots=True)
class RouteRun:
    target: Target
    gates: list[Gate] = field(default_factory=list)
    exchanges: list[Exchange] = field(default_factory=list)
    started_at: float = 0.0
    duration: float = 0.0

    @property
    def failed(self) -> bool:
        return any(g.status is Status.FAIL for g in self.gates)

    def gate(self, name: str, api: str) -> Gate | None:
        return next((g for g in self.gates if g.name == name and g.api == api), None)

    def exchange(self, api: str, purpose: str) -> Exchange | None:
        return next((e for e in self.exchanges if e.api == api and e.purpose == purpose), None)


def target_headers(settings: Settings, target: Target) -> tuple[tuple[str, str], ...]:
    """The -H headers a route is sent: on another host than --base-url, none with a secret's
    name (a Portkey key or a session cookie is the candidate route's, not the other's)."""
    if not target.elsewhere:
        return settings.headers
    return tuple((name, value) for name, value in settings.headers if not is_secret_header(name))


def apis(settings: Settings) -> list[Api]:
    return [ChatApi(), *([ResponsesApi()] if settings.responses else [])]


async def probe_route(target: Target, settings: Settings) -> RouteRun:
    run = RouteRun(target, started_at=time.time())
    began = time.monotonic()
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=settings.timeout, sock_read=settings.timeout)
    async with aiohttp.ClientSession(
        timeout=timeout, auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar()
    ) as session:
        sender = Sender(
            session,
            target_headers(settings, target) + target.headers,
            target.api_key,
            settings.timeout,
            settings.key_header,
        )
        for api in apis(settings):
            await _probe_api(run, sender, api, settings)
        if target.proxy_metrics_url is not None:
            await _attach_proxy_records(session, target.proxy_metrics_url, run.exchanges)
    if target.side is not None:
        _check_side(run, target.side, confirmable=target.proxy_metrics_url is not None)
    run.duration = time.monotonic() - began
    return run


def _check_side(run: RouteRun, side: str, *, confirmable: bool) -> None:
    """`--side`: the proxy honours the header only when started with --canary-side-header, and
    ignores a side it does not know; its own records say which side answered. Without them the
    report said "side canary" and PASS for a baseline that had answered every request (an
    outside review)."""
    routes = [g for g in run.gates if g.name == "route"]
    records = [ex.proxy_record for ex in run.exchanges if ex.proxy_record is not None]
    if not records:  # no metrics URL, or none of the requests found there
        found = "the proxy's records of these requests were not found at --proxy-metrics-url"
        for gate in routes:
            gate.notes.append(
                f"that the proxy sent these requests to side {side!r} is not confirmed: "
                + (found if confirmable else "give --proxy-metrics-url to check it against its records")
            )
        return
    elsewhere = sorted({str(r.get("upstream")) for r in records if r.get("upstream") != side})
    if not elsewhere:
        return
    astray = sum(r.get("upstream") != side for r in records)
    for gate in routes:
        gate.problems.append(
            f"the proxy sent {astray} of the {len(records)} requests it recorded to "
            f"{', '.join(elsewhere)}, not to side {side!r}: start it with --canary-side-header "
            f"{run.target.headers[0][0] if run.target.headers else 'NAME'} and ask for a side it "
            "has (its --upstream-name or --canary-name)"
        )
        gate.status = Status.FAIL


async def _attach_proxy_records(
    session: aiohttp.ClientSession, metrics_url: URL, exchanges: list[Exchange]
) -> None:
    """The proxy's own verdict on each request, next to the probe's, for the report. Only a
    cancelled stream's record may lag its end; the others are written before the answer ends."""
    for ex in exchanges:
        if ex.proxy_record is None:
            ex.proxy_record, _ = await lookup_record(session, metrics_url, ex.trace_id, wait=0)


async def _probe_api(run: RouteRun, sender: Sender, api: Api, s: Settings) -> None:
    target = run.target
    url = target.base_url / api.path

    async def call(purpose: str, body: dict[str, Any], **kw: Any) -> Exchange:
        ex = await send(
            sender,
            url,
            body,
            trace_id=f"{target.trace_prefix}-{api.name}-{purpose}",
            api=api.name,
            purpose=purpose,
            **kw,
        )
        if ex.stream and not ex.refused:
            ex.facts = api.read_stream(ex.events)
        elif ex.doc is not None and not ex.refused:
            ex.answer = api.read_answer(ex.doc)
        run.exchanges.append(ex)
        return ex

    control = await call("control", api.control(s.model))
    route = gates.route(api, control, s.model)
    run.gates.append(route)
    if route.status is Status.FAIL:
        run.gates.extend(
            gates.skipped(name, api.name, "the route gate failed: fix it first") for name in gates.GATES[1:]
        )
        return
    stream = await call("stream", api.stream(s.model))
    framing = gates.framing(api, stream, control)
    streaming = gates.streaming(api, stream, control)
    run.gates += [framing, streaming, gates.usage(api, control, stream)]
    if s.tools:
        tool_ex = await call("tool-call", api.tool_call(s.model))
        found = gates.first_call(tool_ex)
        result_ex = None
        if found is not None and found.call_id and found.name:
            result_ex = await call("tool-result", api.tool_result(s.model, found))
        no_tool = await call("no-tool", api.no_tool(s.model))
        run.gates.append(gates.tools(api, tool_ex, result_ex, no_tool, framing, streaming))
    else:
        run.gates.append(gates.skipped("tools", api.name, "not asked for (--tools)"))
    cancel = await call(
        "cancel", api.stream(s.model), cancel_after=CANCEL_AFTER_FRAMES, is_terminal=api.is_terminal
    )
    after = await call("after-cancel", api.after_cancel(s.model))
    proxy = None
    if target.proxy_metrics_url is not None and cancel.cancelled_after is not None:
        proxy = await _proxy_check(sender.session, target.proxy_metrics_url, cancel, stream)
    run.gates.append(gates.cancellation(api, cancel, after, proxy))


async def _proxy_check(
    session: aiohttp.ClientSession, metrics_url: URL, cancel: Exchange, earlier: Exchange
) -> ProxyCheck:
    """The proxy's record of the cancelled stream. Its record of an earlier, finished stream
    must be there already: without it the probe is not going through that proxy at all, and
    there is no point waiting for the cancel's."""
    seen, error = await lookup_record(session, metrics_url, earlier.trace_id, wait=0)
    if seen is None and error is None:
        return ProxyCheck(str(metrics_url), None, None, missing_earlier=earlier.trace_id)
    record, error = await lookup_record(session, metrics_url, cancel.trace_id)
    earlier.proxy_record = seen
    cancel.proxy_record = record
    return ProxyCheck(str(metrics_url), record, error)
