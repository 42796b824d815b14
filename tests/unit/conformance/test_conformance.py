"""Frame-level conformance: recorded streams of every dialect and deviation, replayed.

Each `cases/NAME.json` names a raw body in `streams/` (the bytes as the upstream sends them,
compressed where the headers say so) and the audit record it must produce. Every case is
replayed twice:

- through the pure audit, cut at every single split point, byte by byte, and at seeded
  random multi-way cuts: the record must not depend on how the bytes were read;
- through the real proxy over sockets, with a real aiohttp upstream writing the body in
  differently cut pieces: the client must receive exactly the upstream's bytes and the
  sink must receive the expected record.

The streams were written from the providers' documented wire formats (see `about` in each
case); `make_compressed.py` rebuilds the compressed ones from their plain sources.

Cases written by `sse-audit-proxy evidence-to-case` from a stream's evidence (an incident)
also carry `timed` (each recorded read: arrival ms, bytes) and `end` (why relaying ended).
Replayed at those times they must give the whole record, timing anomalies (`buffered`,
`bursty`) included; cut at other points and times, everything but the timing anomalies.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import pathlib
import random
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from sse_audit_proxy.core.audit import End, StreamAudit, StreamResult, Thresholds, is_json_lines
from sse_audit_proxy.core.dialects import dialect_for_route, route_for_path
from sse_audit_proxy.core.request_info import RequestInfo, with_target

HERE = pathlib.Path(__file__).parent
CASES = sorted((HERE / "cases").glob("*.json"))


class Case:
    def __init__(self, path: pathlib.Path) -> None:
        doc = json.loads(path.read_text())
        self.name = path.stem
        self.path: str = doc["path"]
        self.request: dict[str, Any] = doc["request"]
        self.status: int = doc["status"]
        self.headers: dict[str, str] = doc["headers"]
        self.body = (path.parent.parent / "streams" / doc["body"]).read_bytes()  # beside cases/
        self.expected: dict[str, Any] = doc["record"]
        self.timed: list[list[float]] | None = doc.get("timed")
        self.end = End(doc.get("end", End.UPSTREAM_EOF.value))
        self.thresholds = Thresholds.from_changed(doc.get("thresholds", {}))  # serve's flags

    def info(self) -> RequestInfo:
        """The request as the proxy reads it: its body, and what its target says (Gemini's)."""
        said = dialect_for_route(route_for_path(self.path)).target_info(self.path)
        return with_target(RequestInfo.from_body(json.dumps(self.request).encode()), said)

    @property
    def is_sse(self) -> bool:
        return self.headers["Content-Type"].startswith("text/event-stream")

    def replay(self, pieces: list[bytes]) -> StreamResult | None:
        """The pure audit, decided as the proxy decides, fed `pieces` 1 ms apart."""
        info = self.info()
        audit = StreamAudit(
            dialect_for_route(route_for_path(self.path))(),
            0.0,
            include_usage=info.include_usage,
            content_encoding=self.headers.get("Content-Encoding", ""),
            event_stream=self.is_sse,
            json_lines=is_json_lines(self.headers["Content-Type"]),
            thresholds=self.thresholds,
        )
        times = [0.001 * (i + 1) for i in range(len(pieces))]
        return self._run(audit, info, pieces, times)

    def _run(
        self, audit: StreamAudit, info: RequestInfo, pieces: list[bytes], times: list[float]
    ) -> StreamResult | None:
        for piece, t in zip(pieces, times, strict=True):
            audit.feed(piece, t)
        if not self.is_sse and not info.stream:
            return None
        return audit.finish((times[-1] if times else 0.0) + 0.001, self.end)

    def replay_timed(self) -> StreamResult | None:
        """An incident's case: each recorded read at its recorded arrival time."""
        assert self.timed is not None
        info = self.info()
        audit = StreamAudit(
            dialect_for_route(route_for_path(self.path))(),
            0.0,
            include_usage=info.include_usage,
            event_stream=self.is_sse,
            json_lines=is_json_lines(self.headers["Content-Type"]),
            thresholds=self.thresholds,
        )
        pieces, offset = [], 0
        for _, size in self.timed:
            pieces.append(self.body[offset : offset + int(size)])
            offset += int(size)
        assert offset == len(self.body)
        return self._run(audit, info, pieces, [t / 1000.0 for t, _ in self.timed])


TIMING_ANOMALIES = ("buffered", "bursty")


def untimed(record: dict[str, Any] | None) -> dict[str, Any] | None:
    """A record without the anomalies that depend on when bytes arrived."""
    if record is None:
        return None
    return {**record, "anomalies": [a for a in record["anomalies"] if a not in TIMING_ANOMALIES]}


def load(path: pathlib.Path) -> Case:
    return Case(path)


def observed(result: StreamResult | None) -> dict[str, Any] | None:
    """The split-independent part of a record (timings depend on when bytes arrived)."""
    if result is None:
        return None
    return {
        "outcome": result.outcome.value,
        "end": result.end.value,
        "anomalies": list(result.anomalies),
        "frames": result.frames,
        "content_frames": result.content_frames,
        "keepalives": result.keepalives,
        "done": result.done,
        "finish_reasons": result.finish_reasons,
        "usage": result.usage,
        "prompt_tokens": result.prompt_tokens,
        "completion_tokens": result.completion_tokens,
        "tool_calls": result.tool_calls,
        "unterminated_frame": result.unterminated_frame,
    }


def cut(body: bytes, points: list[int]) -> list[bytes]:
    bounds = [0, *sorted(set(points)), len(body)]
    return [body[a:b] for a, b in itertools.pairwise(bounds) if b > a]


def splits(case: Case) -> Iterator[list[bytes]]:
    body = case.body
    yield [body]
    yield [body[i : i + 1] for i in range(len(body))]
    for k in range(1, len(body)):
        yield [body[:k], body[k:]]
    rng = random.Random(case.name)
    for _ in range(40):
        yield cut(body, rng.sample(range(1, len(body)), min(len(body) - 1, rng.randint(2, 30))))


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_recorded_stream_gives_its_record_at_every_split_point(path: pathlib.Path) -> None:
    case = load(path)
    expected = case.expected["stream"]
    same = untimed if case.timed is not None else (lambda r: r)
    for pieces in splits(case):
        got = observed(case.replay(pieces))
        assert same(got) == same(expected), f"{case.name}: split at {[len(p) for p in pieces][:8]}..."


TIMED = [p for p in CASES if "timed" in json.loads(p.read_text())]


@pytest.mark.parametrize("path", TIMED, ids=[p.stem for p in TIMED])
def test_incident_case_replayed_at_its_recorded_times_gives_its_whole_record(path: pathlib.Path) -> None:
    case = load(path)
    assert observed(case.replay_timed()) == case.expected["stream"]


def socket_splits(case: Case) -> list[list[bytes]]:
    """Three ways the upstream writes the body: whole, its first bytes one write at a time
    (a gzip header split across reads), and seeded random cuts."""
    body = case.body
    rng = random.Random(case.name + "/socket")
    head = [1, 2, 3, 5, 8, 13, 21]
    return [
        [body],
        cut(body, [p for p in head if p < len(body)]),
        cut(body, rng.sample(range(1, len(body)), min(len(body) - 1, 12))),
    ]


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
async def test_recorded_stream_through_the_proxy_is_forwarded_unchanged_and_audited(
    path: pathlib.Path, upstream: Any, proxy: Any, http: aiohttp.ClientSession
) -> None:
    case = load(path)
    if case.end is not End.UPSTREAM_EOF:
        pytest.skip(f"recorded end {case.end.value}: a socket replay ends the body cleanly")
    same = untimed if case.timed is not None else (lambda r: r)
    plans = socket_splits(case)

    async def serve(request: web.Request) -> web.StreamResponse:
        await request.read()
        pieces = plans[int(request.headers["X-Plan"])]
        resp = web.StreamResponse(status=case.status, headers=case.headers)
        await resp.prepare(request)
        for piece in pieces:
            await resp.write(piece)
            await asyncio.sleep(0.002)  # let each write reach the proxy as its own read
        await resp.write_eof()
        return resp

    running = await proxy(await upstream(serve), thresholds=case.thresholds)  # serve's flags
    path, _, query = case.path.partition("?")
    for n in range(len(plans)):
        async with http.post(
            running.url.with_path(path).with_query(query), json=case.request, headers={"X-Plan": str(n)}
        ) as resp:
            assert resp.status == case.status
            received = await resp.read()
            assert resp.headers.get("Content-Encoding") == case.headers.get("Content-Encoding")
        assert received == case.body, f"{case.name}: plan {n} altered the body"
        records = await running.sink.wait(n + 1)
        rec = records[n]
        assert (rec.route, rec.status) == (case.expected["route"], case.expected["status"])
        assert same(observed(rec.stream)) == same(case.expected["stream"]), f"{case.name}: plan {n}"
        assert rec.bytes == len(case.body)
