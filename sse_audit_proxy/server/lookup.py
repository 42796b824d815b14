"""`GET /streams/recent` and `GET /streams/{trace_id}` on the metrics port.

One process answers from its own `RecentStreams`; with `--workers N` the supervisor answers
by asking every worker the same question and merging, so an operator never has to know
which worker relayed a stream.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol, TypeVar
from urllib.parse import quote

import aiohttp
import orjson
from aiohttp import web
from multidict import MultiMapping

from sse_audit_proxy.core.dialects import DIALECTS
from sse_audit_proxy.core.verdict import Anomaly, Outcome
from sse_audit_proxy.server.off_loop import uncollected
from sse_audit_proxy.server.proxy import error_body
from sse_audit_proxy.sinks import evidence
from sse_audit_proxy.sinks import recent as recent_streams
from sse_audit_proxy.sinks.logs import record_fields
from sse_audit_proxy.sinks.recent import PARAMS, Query, RecentStreams, http_status
from sse_audit_proxy.sinks.redaction import Redactor

T = TypeVar("T")
MAX_LIMIT = 10_000
# Records of one trace ID in an answer, newest first (`held` says how many there are): a
# client chooses its trace ID, and made 20,000 records share one, a 49 MB answer.
MAX_PER_TRACE_ID = 1_000
OUTCOMES = tuple(str(o) for o in Outcome)
ANOMALIES = tuple(dict.fromkeys([*map(str, Anomaly), *(n for d in DIALECTS for n in d.extra_anomalies)]))
Answer = dict[str, Any]  # {"streams": [...], "workers": [{"pid", "held", "capacity"}]}


class Source(Protocol):
    async def recent(self, query: Query) -> Answer: ...
    async def find(self, trace_id: str) -> Answer: ...
    async def evidence(self, trace_id: str, newest_only: bool = False) -> Answer: ...


class LocalSource:
    """Answers from this process's records. Answers are built in one thread of their own,
    never on the loop that relays streams: 20,000 records of one trace ID took 6.8 s to build,
    and every stream of the proxy port waited that long while its records said nothing of it
    (an outside review). One thread, so that beside the loop there is never more than one
    builder asking for the GIL, which it gives back every switch interval."""

    def __init__(
        self, recent: RecentStreams, redactor: Redactor | None = None, instance: str | None = None
    ) -> None:
        self._recent = recent
        self._redactor = redactor if redactor is not None else Redactor()
        self._instance = instance
        self._builder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sse-audit-lookup")
        self._closed = False

    def _worker(self) -> list[dict[str, int]]:
        return [{"pid": os.getpid(), "held": len(self._recent), "capacity": self._recent.capacity}]

    def close(self) -> None:
        """Build no more: lookups still waiting are cancelled (a SIGTERM behind six 10,000-record
        lookups waited for them all; a review). The one being built finishes."""
        self._closed = True
        self._builder.shutdown(wait=False, cancel_futures=True)

    async def _built(self, build: Callable[[], T]) -> T:
        try:
            return await asyncio.get_running_loop().run_in_executor(self._builder, uncollected, build)
        except (RuntimeError, asyncio.CancelledError):
            if not self._closed:
                raise
            raise web.HTTPServiceUnavailable(  # draining: lookups are not built any more
                text=error_body("the proxy is shutting down", "server_error", "draining").decode(),
                content_type="application/json",
            ) from None

    async def recent(self, query: Query) -> Answer:
        records = self._recent.snapshot()
        found = await self._built(lambda: recent_streams.recent(records, query))
        return {"streams": found, "workers": self._worker()}

    async def find(self, trace_id: str) -> Answer:
        records = self._recent.snapshot()

        def build() -> Answer:
            held = recent_streams.held(records, trace_id)  # (a scan of up to 100,000: off the loop too)
            return {"streams": recent_streams.find(held[:MAX_PER_TRACE_ID]), "held": len(held)}

        return {**await self._built(build), "workers": self._worker()}

    async def evidence(self, trace_id: str, newest_only: bool = False) -> Answer:
        """Held records' evidence, newest first (at most MAX_PER_TRACE_ID), or the newest's
        alone: a trace ID that a client reused a thousand times made every page view build a
        thousand. `held`: how many records it has."""
        records = self._recent.snapshot()

        def build() -> Answer:
            held = recent_streams.held(records, trace_id)
            chosen = held[: 1 if newest_only else MAX_PER_TRACE_ID]
            found = [
                evidence.build(rec, record_fields(rec), self._redactor, self._instance) for rec in chosen
            ]
            return {"streams": found, "held": len(held)}

        return {**await self._built(build), "workers": self._worker()}


class WorkersSource:
    """Asks each worker's private metrics port and merges the answers, newest first."""

    # A worker answers its lookups one at a time (LocalSource): one behind a few 10,000-record
    # answers waited longer than 2 s, and was reported unreachable (a review).
    def __init__(self, worker_urls: Callable[[], Sequence[str]], timeout: float = 10.0) -> None:
        self._urls = worker_urls
        self._timeout = aiohttp.ClientTimeout(total=timeout)

    async def _ask(self, path: str, params: dict[str, str]) -> list[Answer]:
        async with aiohttp.ClientSession(timeout=self._timeout) as session:

            async def one(base: str) -> Answer:
                try:
                    async with session.get(base + path, params=params) as resp:
                        if resp.status in (200, 404):
                            answer: Answer = await resp.json()
                            return answer
                        return {"workers": [{"url": base, "error": f"status {resp.status}"}]}
                except (aiohttp.ClientError, TimeoutError):
                    return {"workers": [{"url": base, "error": "unreachable"}]}

            return list(await asyncio.gather(*(one(url) for url in self._urls())))

    @staticmethod
    def _merge(answers: list[Answer], limit: int) -> Answer:
        streams = [s for a in answers for s in a.get("streams", ())]
        streams.sort(key=lambda s: s["started_at"], reverse=True)  # ISO 8601 UTC sorts as text
        workers = [w for a in answers for w in a.get("workers", ())]
        held = sum(a.get("held", len(a.get("streams", ()))) for a in answers)
        return {"streams": streams[:limit], "held": held, "workers": workers}

    async def recent(self, query: Query) -> Answer:
        return self._merge(await self._ask("/streams/recent", query.params()), query.limit)

    async def find(self, trace_id: str) -> Answer:
        return self._merge(await self._ask("/streams/" + quote(trace_id, safe=""), {}), MAX_PER_TRACE_ID)

    async def evidence(self, trace_id: str, newest_only: bool = False) -> Answer:
        path = "/streams/" + quote(trace_id, safe="") + "/evidence"
        params = {"all": "1", **({"newest": "1"} if newest_only else {})}
        return self._merge(await self._ask(path, params), 1 if newest_only else MAX_PER_TRACE_ID)


def _bad_request(message: str) -> web.Response:
    return web.Response(
        status=400,
        content_type="application/json",
        body=error_body(message, "invalid_request_error", "invalid_query"),
        headers=NO_STORE,
    )


FREE_TEXT = ("route", "model", "upstream", "error")  # filters with no list of values


def read_query(
    q: MultiMapping[str], default_limit: int = 100, blank_is_unset: bool = False
) -> Query | list[str]:
    """A `/streams/recent` query string as a `Query`, or what is wrong with it, a sentence each.

    A filter that matches nothing because it was mistyped (`outcome=truncate`, `?status=502`
    on an API that did not take it, `?model=` from a script's empty variable) was read
    mid-incident as "no such streams" (outside reviews), so anything unknown or empty is
    refused rather than ignored. The inspector's form sends its empty fields: there they mean
    "any" (`blank_is_unset`).
    """
    problems = [
        f"unknown parameter {name!r}; /streams/recent takes " + ", ".join(PARAMS)
        for name in sorted(set(q) - set(PARAMS))
    ]
    problems += [
        f"parameter {name!r} given more than once"
        for name in sorted(n for n in set(q) if len(q.getall(n)) > 1)
    ]
    given = {
        name: value for name in PARAMS if (value := q.get(name)) is not None and (value or not blank_is_unset)
    }
    # (the others' own checks below say what they take)
    problems += [f"{name} is empty: leave it out to mean any" for name in FREE_TEXT if given.get(name) == ""]
    limit = default_limit
    if (text := given.get("limit")) is not None:
        limit = int(text) if text.isascii() and text.isdigit() else 0
        if not 1 <= limit <= MAX_LIMIT:
            problems.append(f"limit must be a whole number from 1 to {MAX_LIMIT}, got {text!r}")
    status = None if (text := given.get("status")) is None else http_status(text)
    if text is not None and status is None:
        problems.append(f"status must be an HTTP status from 100 to 599, got {text!r}")
    for name, known in (("outcome", OUTCOMES), ("anomaly", ANOMALIES)):
        if (value := given.get(name)) is not None and value not in known:
            problems.append(f"{name} must be one of {', '.join(known)}; got {value!r}")
    if problems:
        return problems
    return Query(
        limit=limit,
        outcome=given.get("outcome"),
        anomaly=given.get("anomaly"),
        route=given.get("route"),
        model=given.get("model"),
        upstream=given.get("upstream"),
        status=status,
        error=given.get("error"),
    )


# Records and evidence are a moment's, and about others' requests: no cache keeps them.
NO_STORE = {"Cache-Control": "no-store"}


def add_routes(app: web.Application, source: Source) -> None:
    async def recent(request: web.Request) -> web.Response:
        query = read_query(request.query)
        if isinstance(query, list):
            return _bad_request("; ".join(query))
        return await _json(await source.recent(query))

    async def by_trace_id(request: web.Request) -> web.Response:
        trace_id = request.match_info["trace_id"]
        answer = await source.find(trace_id)
        if answer["streams"]:
            return await _json({"trace_id": trace_id, **answer})
        return not_found(trace_id, answer)

    async def evidence_of(request: web.Request) -> web.Response:
        """The newest record's evidence file (`?all=1`: every record's, as a lookup answer;
        with `&newest=1` the newest's alone, and how many are held: what a supervisor asks)."""
        trace_id = request.match_info["trace_id"]
        every = request.query.get("all") == "1"
        answer = await source.evidence(trace_id, newest_only=not every or request.query.get("newest") == "1")
        if every and (answer["streams"] or not unanswered(answer)):
            return await _json(answer, 200 if answer["streams"] else 404)
        if not answer["streams"]:
            return not_found(trace_id, answer)
        return await _json(answer["streams"][0], indent=True)

    app.router.add_get("/streams/recent", recent)  # first: "recent" is not looked up as an ID
    app.router.add_get("/streams/{trace_id:.+}/evidence", evidence_of)
    app.router.add_get("/streams/{trace_id:.+}", by_trace_id)  # trace IDs may hold "/"


def unanswered(answer: Answer) -> int:
    """Workers that did not answer the supervisor's question (busy, restarting)."""
    return sum(1 for w in answer.get("workers", ()) if "error" in w)


def not_found(trace_id: str, answer: Answer | None = None) -> web.Response:
    """404; or 503 when a worker did not answer, which may hold the record: "no record" read as
    "no such stream" mid-incident, while the worker was busy with other lookups (a review)."""
    missing = unanswered(answer) if answer is not None else 0
    if missing:
        message = (
            f"no record of trace ID {trace_id!r} from the workers that answered; {missing} did "
            "not answer in time and may hold it: ask again"
        )
        status, kind, code = 503, "server_error", "workers_unanswered"
    else:
        message = f"no record of trace ID {trace_id!r} among the most recent streams (see --recent-streams)"
        status, kind, code = 404, "not_found_error", "trace_id_not_found"
    return web.Response(
        status=status,
        content_type="application/json",
        body=error_body(message, kind, code),
        headers=NO_STORE,
    )


async def _json(doc: object, status: int = 200, indent: bool = False) -> web.Response:
    """Written out off the loop too: megabytes of records. Evidence files are read by people
    too: indented."""
    option = orjson.OPT_INDENT_2 if indent else None
    body = await asyncio.to_thread(uncollected, lambda: orjson.dumps(doc, option=option))
    return web.Response(status=status, body=body, content_type="application/json", headers=NO_STORE)
