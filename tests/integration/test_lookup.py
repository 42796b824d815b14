"""Incident lookup on the metrics port: from a trace ID to the stream's verdict, bounded memory."""

from __future__ import annotations

import asyncio
import gc
import threading
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from demo_client import FAST, send
from reliability_support import ask_without_reading, read_what_is_left
from yarl import URL

from sse_audit_proxy.core.audit import End, Outcome, StreamResult
from sse_audit_proxy.core.record import AuditRecord
from sse_audit_proxy.server import admin, inspector
from sse_audit_proxy.server.lookup import LocalSource, WorkersSource, add_routes
from sse_audit_proxy.sinks import evidence as evidence_module
from sse_audit_proxy.sinks import recent as recent_module
from sse_audit_proxy.sinks.logs import record_fields
from sse_audit_proxy.sinks.recent import Query, RecentStreams


async def test_recent_streams_are_served_newest_first_with_the_log_line_fields(
    demo_gateway, proxy, http
) -> None:
    p = await proxy(await demo_gateway(**FAST))
    for i, scenario in enumerate(("healthy", "truncated", "buffered")):
        await send(http, p.url, scenario, trace_id=f"trace-{i}")
    await p.sink.wait(3)
    async with http.get(p.metrics_url / "streams/recent") as resp:
        assert resp.status == 200
        answer = await resp.json()
    streams = answer["streams"]
    assert [s["trace_id"] for s in streams] == ["trace-2", "trace-1", "trace-0"]
    expected = [record_fields(rec) for rec in reversed(p.sink.records)]
    assert streams == expected
    assert [s["outcome"] for s in streams] == ["complete", "truncated", "complete"]
    assert "buffered" in streams[0]["anomalies"]
    assert answer["workers"][0]["held"] == 3


async def test_a_trace_id_leads_to_its_verdict_even_with_a_slash(demo_gateway, proxy, http) -> None:
    p = await proxy(await demo_gateway(**FAST))
    await send(http, p.url, "healthy", trace_id="other")
    await send(http, p.url, "no-done", trace_id="incident/42")
    await p.sink.wait(2)
    async with http.get(p.metrics_url.with_path("/streams/incident%2F42", encoded=True)) as resp:
        assert resp.status == 200
        answer = await resp.json()
    assert answer["trace_id"] == "incident/42"
    [found] = answer["streams"]
    assert found["outcome"] == "truncated"
    assert found["anomalies"] == ["missing_done"]
    assert found["done"] is False


async def test_an_unknown_trace_id_is_an_openai_shaped_404(demo_gateway, proxy, http) -> None:
    p = await proxy(await demo_gateway(**FAST))
    async with http.get(p.metrics_url / "streams/nope") as resp:
        assert resp.status == 404
        error = (await resp.json())["error"]
    assert error["code"] == "trace_id_not_found" and error["type"] and "nope" in error["message"]


async def test_recent_streams_filter_by_outcome_anomaly_and_limit(demo_gateway, proxy, http) -> None:
    p = await proxy(await demo_gateway(**FAST))
    for scenario in ("healthy", "truncated", "no-usage", "truncated", "healthy"):
        await send(http, p.url, scenario)
    await p.sink.wait(5)

    async def ask(**params: str) -> list[dict]:
        async with http.get(p.metrics_url / "streams/recent", params=params) as resp:
            assert resp.status == 200
            return (await resp.json())["streams"]

    assert len(await ask(outcome="truncated")) == 2
    assert len(await ask(anomaly="missing_usage")) == 3
    assert [s["anomalies"] for s in await ask(outcome="complete", anomaly="missing_usage")] == [
        ["missing_usage"]
    ]
    assert len(await ask(limit="2")) == 2
    assert await ask(model="no-such-model") == []


@pytest.mark.parametrize("limit", ["0", "ten", "100000"])
async def test_a_bad_limit_is_an_openai_shaped_400(demo_gateway, proxy, http, limit: str) -> None:
    p = await proxy(await demo_gateway(**FAST))
    async with http.get(p.metrics_url / "streams/recent", params={"limit": limit}) as resp:
        assert resp.status == 400
        assert (await resp.json())["error"]["code"] == "invalid_query"


@pytest.mark.parametrize(
    ("name", "typo", "known"),
    [("outcome", "truncate", "truncated"), ("anomaly", "bufferd", "buffered"), ("anomaly", "", "held_open")],
)
async def test_a_mistyped_filter_is_a_400_naming_the_values_it_takes(
    demo_gateway, proxy, http, name: str, typo: str, known: str
) -> None:
    # It matched nothing: mid-incident, an empty answer reads as "no such streams".
    p = await proxy(await demo_gateway(**FAST))
    await send(http, p.url, "truncated", trace_id="cut")
    await p.sink.wait(1)
    async with http.get(p.metrics_url / "streams/recent", params={name: typo}) as resp:
        assert resp.status == 400
        error = (await resp.json())["error"]
        assert error["code"] == "invalid_query" and known in error["message"]
    async with http.get(p.metrics_url / "streams/recent", params={"outcome": "truncated"}) as resp:
        assert [s["trace_id"] for s in (await resp.json())["streams"]] == ["cut"]


async def test_recent_streams_filter_by_status_and_error_and_refuse_unknown_parameters(
    demo_gateway, proxy, http
) -> None:
    """An on-call's `?status=502` was ignored and answered every record (an outside review)."""
    p = await proxy(await demo_gateway(**FAST))
    await send(http, p.url, "healthy", trace_id="ok")
    await send(http, p.url, "http-500", trace_id="five")
    await send(http, p.url, "http-429", trace_id="limited")
    await p.sink.wait(3)

    async def ask(**params: str) -> tuple[int, dict]:
        async with http.get(p.metrics_url / "streams/recent", params=params) as resp:
            return resp.status, await resp.json()

    status, body = await ask(status="500")
    assert status == 200 and [s["trace_id"] for s in body["streams"]] == ["five"]
    status, body = await ask(status="429", outcome="upstream_error")
    assert [s["trace_id"] for s in body["streams"]] == ["limited"]
    status, body = await ask(error="upstream_unreachable")
    assert status == 200 and body["streams"] == []
    for params in (
        {"stauts": "502"},
        {"status": "5xx"},
        {"status": "99"},
        {"code": "500", "limit": "5"},
        {"error": ""},
        {"model": ""},  # a script's empty variable: it answered no streams
        {"route": "", "upstream": ""},
    ):
        status, body = await ask(**params)
        assert status == 400 and body["error"]["code"] == "invalid_query", params
    status, body = await ask(bogus="1")
    assert "'bogus'" in body["error"]["message"] and "status" in body["error"]["message"]
    async with http.get(
        p.metrics_url.with_path("/streams/recent").with_query("status=500&status=200")
    ) as resp:
        assert resp.status == 400 and "more than once" in (await resp.json())["error"]["message"]
    # The inspector's list too: a mistyped link listed every stream.
    async with http.get(p.metrics_url.with_path("/").with_query("statuss=502")) as resp:
        assert resp.status == 400 and "statuss" in await resp.text()
    async with http.get(p.metrics_url.with_path("/").with_query("status=500")) as resp:
        page = await resp.text()
        assert resp.status == 200 and "five" in page and "limited" not in page
        assert "name=status value='500'" in page  # kept by the filter form


def _record(i: int) -> AuditRecord:
    result = StreamResult(
        Outcome.COMPLETE,
        End.UPSTREAM_EOF,
        [],
        0.01,
        0.02,
        0.01,
        0.1,
        3,
        2,
        0,
        10,
        True,
        ["stop"],
        None,
        None,
        None,
        0,
        False,
    )
    return AuditRecord(f"t{i}", "chat_completions", "POST", "m", 200, 1.7e9 + i, 0.1, 10, result)


def test_the_ring_buffer_holds_only_the_last_n_records() -> None:
    recent = RecentStreams(capacity=3)
    for i in range(10):
        recent.record(_record(i))
    assert len(recent) == 3
    assert [s["trace_id"] for s in recent.recent(Query(limit=100))] == ["t9", "t8", "t7"]
    assert recent.find("t6") == []
    assert recent.find("t8")[0]["trace_id"] == "t8"


async def test_metrics_port_still_answers_lookups_while_streams_flow(demo_gateway, proxy) -> None:
    p = await proxy(await demo_gateway(**FAST))
    async with aiohttp.ClientSession() as http:
        await send(http, p.url, "slow-first-token", trace_id="slow")
        async with http.get(p.metrics_url / "streams/slow") as resp:
            assert (await resp.json())["streams"][0]["ttft_ms"] >= 1000


async def test_a_trace_id_reused_many_times_builds_one_evidence_for_a_page(demo_gateway, proxy, http) -> None:
    # Every page view built the evidence of all its records (1,000: 0.2 s of the event loop).
    p = await proxy(await demo_gateway(**FAST))
    await send(http, p.url, "healthy", trace_id="reused")
    await p.sink.wait(1)
    record = p.sink.records[0]
    for _ in range(200):
        p.service.recent.record(record)
    built = 0
    real_build = evidence_module.build

    def counting(*args: Any, **kwargs: Any) -> Any:
        nonlocal built
        built += 1
        return real_build(*args, **kwargs)

    evidence_module.build = counting  # type: ignore[assignment]
    try:
        async with http.get(p.metrics_url / "ui/streams/reused") as resp:
            assert resp.status == 200 and "200 older record" in await resp.text()
        async with http.get(p.metrics_url / "streams/reused/evidence") as resp:
            assert resp.status == 200 and (await resp.json())["trace_id"] == "reused"
        assert built == 2
        async with http.get((p.metrics_url / "streams/reused/evidence").with_query(all="1")) as resp:
            assert len((await resp.json())["streams"]) == 201
    finally:
        evidence_module.build = real_build  # type: ignore[assignment]


async def test_lookups_are_built_off_the_loop_and_a_trace_id_answers_its_newest_thousand(
    demo_gateway, proxy, http, monkeypatch
) -> None:
    # Built on the loop, one lookup of 20,000 records sharing a client-chosen trace ID held
    # every stream of the proxy port for 6.8 s, and the streams' records said nothing of it.
    p = await proxy(await demo_gateway(**FAST), recent_streams=2000)
    await send(http, p.url, "healthy", trace_id="same")
    await p.sink.wait(1)
    for _ in range(1500):
        p.service.recent.record(p.sink.records[0])
    loop_thread = threading.get_ident()
    built_on: set[int] = set()

    collecting: set[bool] = set()

    def watched(real: Any) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            built_on.add(threading.get_ident())
            collecting.add(gc.isenabled())
            return real(*args, **kwargs)

        return call

    monkeypatch.setattr(evidence_module, "build", watched(evidence_module.build))
    monkeypatch.setattr(recent_module, "record_fields", watched(recent_module.record_fields))
    async with http.get((p.metrics_url / "streams/same/evidence").with_query(all="1")) as resp:
        answer = await resp.json()
        assert (len(answer["streams"]), answer["held"]) == (1000, 1501)
    async with http.get(p.metrics_url / "streams/same") as resp:
        answer = await resp.json()
        assert (len(answer["streams"]), answer["held"]) == (1000, 1501)
    async with http.get(p.metrics_url.with_query(limit="2000")) as resp:
        assert resp.status == 200 and (await resp.text()).count("</tr>") == 1 + 1501
    async with http.get(p.metrics_url / "streams/recent") as resp:
        assert len((await resp.json())["streams"]) == 100
    assert built_on and loop_thread not in built_on
    # ... with the collector off: full collections over every held record stopped the loop too
    assert collecting == {False} and gc.isenabled()


async def test_a_lookup_a_worker_did_not_answer_is_a_503_not_a_404(unused_tcp_port: int) -> None:
    # A worker busy with other lookups past the supervisor's wait: "no record" read as "no such
    # stream" mid-incident (a review).
    app = web.Application()
    source = WorkersSource(lambda: [f"http://127.0.0.1:{unused_tcp_port}"], timeout=1.0)
    add_routes(app, source)
    inspector.add_routes(app, source)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        async with aiohttp.ClientSession() as http:
            for path in ("/streams/t1", "/streams/t1/evidence", "/streams/t1/evidence?all=1"):
                async with http.get(f"http://127.0.0.1:{port}{path}") as resp:
                    assert resp.status == 503, path
                    assert (await resp.json())["error"]["code"] == "workers_unanswered"
            async with http.get(f"http://127.0.0.1:{port}/ui/streams/t1") as resp:
                assert resp.status == 503 and "1 did not answer in time" in await resp.text()
            async with http.get(f"http://127.0.0.1:{port}/") as resp:
                assert "1 process(es) asked, 1 did not answer" in await resp.text()
    finally:
        await runner.cleanup()


async def test_lookups_still_waiting_at_shutdown_are_not_built() -> None:
    recent = RecentStreams(capacity=3)
    recent.record(_record(1))
    source = LocalSource(recent)
    assert (await source.recent(Query()))["streams"][0]["trace_id"] == "t1"
    source.close()
    with pytest.raises(web.HTTPServiceUnavailable):
        await source.recent(Query())


async def test_the_inspector_says_a_filter_it_does_not_know(demo_gateway, proxy, http) -> None:
    p = await proxy(await demo_gateway(**FAST))
    async with http.get(p.metrics_url.with_query(outcome="truncate")) as resp:
        page = await resp.text()
        assert resp.status == 400 and "outcome must be one of" in page and "&#x27;truncate&#x27;" in page
    # It reads its query as /streams/recent does (it took the first of a repeated parameter and
    # a limit that was no number as its default); only its form's empty fields mean "any".
    for query, words in (
        ("outcome=complete&outcome=truncated", "given more than once"),
        ("limit=ten", "limit must be a whole number"),
    ):
        async with http.get(p.metrics_url.with_query(query)) as resp:
            assert resp.status == 400 and words in await resp.text(), query
    blank = "limit=&outcome=&anomaly=&model=&route=&upstream=&status=&error="
    async with http.get(p.metrics_url.with_query(blank)) as resp:
        assert resp.status == 200 and "0 shown" in await resp.text()


async def test_a_head_of_the_metrics_port_is_the_head_alone_and_the_connection_stays_usable(
    demo_gateway, proxy
) -> None:
    p = await proxy(await demo_gateway(**FAST))
    reader, writer = await asyncio.open_connection(p.metrics_url.host, p.metrics_url.port)
    host = b"Host: 127.0.0.1\r\n"
    for path in (b"/metrics", b"/streams/recent", b"/healthz"):
        writer.write(b"HEAD " + path + b" HTTP/1.1\r\n" + host + b"\r\n")
    writer.write(b"GET /healthz HTTP/1.1\r\n" + host + b"Connection: close\r\n\r\n")
    got = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    # Four answers, each a head alone but the last: a body after a HEAD's head was read as the
    # next answer by clients that reuse connections.
    assert got.count(b"HTTP/1.1 200") == 4
    assert got.endswith(b'{"status": "ok"}') and got.count(b"\r\n\r\n") == 4


async def test_a_lookup_that_is_never_read_is_let_go(demo_gateway, proxy, monkeypatch) -> None:
    # The 30 s send deadline of /metrics holds for every answer of the port: 1,000 records of
    # one trace ID are megabytes, and 40 clients that asked and never read held 70 MB for ever.
    monkeypatch.setattr(admin, "SEND_TIMEOUT", 1.0)
    p = await proxy(await demo_gateway(**FAST), recent_streams=1000)
    async with aiohttp.ClientSession() as http:
        await send(http, p.url, "healthy", trace_id="same")
    await p.sink.wait(1)
    for _ in range(999):
        p.service.recent.record(p.sink.records[0])
    host, port = p.metrics_url.host, p.metrics_url.port
    sock = await ask_without_reading(host, port, b"/streams/same/evidence?all=1")
    await asyncio.sleep(2.0)  # not read for longer than the deadline
    declared, body = await read_what_is_left(sock)
    assert declared > 1 << 20 and body < declared, (declared, body)  # cut short, not finished


async def test_records_and_evidence_are_answered_for_no_cache_to_keep(demo_gateway, proxy, http) -> None:
    """The HTML pages said `no-store`; the JSON of the same records did not (outside review)."""
    p = await proxy(await demo_gateway(**FAST))
    await send(http, p.url, "truncated", trace_id="kept-1")
    await p.sink.wait(1)
    for path in (
        "streams/recent",
        "streams/kept-1",
        "streams/kept-1/evidence",
        "streams/kept-1/evidence?all=1",
    ):
        async with http.get(p.metrics_url.join(URL(path))) as resp:
            assert resp.status == 200, path
            assert resp.headers.get("Cache-Control") == "no-store", path
    for path, status in (
        ("streams/unknown-1", 404),
        ("streams/unknown-1/evidence", 404),
        ("streams/recent?limit=x", 400),
    ):
        async with http.get(p.metrics_url.join(URL(path))) as resp:  # their errors too (docs review)
            assert resp.status == status, path
            assert resp.headers.get("Cache-Control") == "no-store", path
