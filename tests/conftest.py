"""Shared fixtures: a real aiohttp upstream and the real proxy, both on 127.0.0.1 free ports."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import trustme
from aiohttp import web
from prometheus_client import CollectorRegistry
from yarl import URL

from sse_audit_proxy.core.audit import Thresholds
from sse_audit_proxy.core.record import AuditRecord
from sse_audit_proxy.server.listen import listen
from sse_audit_proxy.server.proxy import ProxyConfig
from sse_audit_proxy.server.service import Service, ServiceConfig
from sse_audit_proxy.sinks import evidence
from sse_audit_proxy.sinks.logs import record_fields
from sse_audit_proxy.sinks.redaction import Redactor

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Secret scan (issue 5): no API key a test sends may show up in any output the suite captures.
# Keys are these constants plus every credential header value (12+ characters) that reached a
# test upstream. Each test's captured stdout, stderr and log records are checked as its report
# is made (a leak fails that test); all captured text is checked again at the end of the
# session against keys first seen later.
TEST_KEYS = ("sk-test-SECRET-0123456789abcdef", "azure-SECRET-key-0123456789")
SEEN_KEYS: set[str] = set(TEST_KEYS)
_CAPTURED: list[tuple[str, str]] = []  # (test id, captured text)
_CREDENTIAL_HEADERS = ("Authorization", "Proxy-Authorization", "api-key", "x-api-key", "Cookie")


@web.middleware
async def _note_keys(request: web.Request, handler: Handler) -> web.StreamResponse:
    for name in _CREDENTIAL_HEADERS:
        for value in request.headers.getall(name, ()):
            value = value.removeprefix("Bearer ").strip()
            if len(value) >= 12:
                SEEN_KEYS.add(value)
    return await handler(request)


# Text scan (issue 15): no prompt or completion text may reach a record, an evidence file or a
# page. The texts are the demo's and the probe's prompts, and anything a test marks as prompt
# or completion text by starting it with one of TEXT_MARKERS (its prompts and its upstreams'
# completions). Every record a test proxy emits is scanned, with the evidence built from it;
# so is every test's captured output; the evidence and inspector tests scan what they fetch.
TEXT_MARKERS = ("PROMPT-TEXT-", "COMPLETION-TEXT-")


def _known_texts() -> tuple[str, ...]:
    from sse_audit_proxy.tools import traffic
    from sse_audit_proxy.tools.probe import prompts

    return (*traffic.PROMPTS, prompts.COUNT, prompts.COUNT_SHORT, prompts.WEATHER, *TEXT_MARKERS)


TEXTS = _known_texts()


def leaked_texts(text: str) -> list[str]:
    return sorted(t for t in TEXTS if t in text)


def leaked_keys(text: str) -> list[str]:
    return sorted(k for k in SEEN_KEYS if k in text) + leaked_texts(text)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    outcome = yield
    report = outcome.get_result()
    text = "\n".join(content for _, content in report.sections)
    if not text:
        return
    _CAPTURED.append((item.nodeid, text))
    leaked = leaked_keys(text)
    if leaked and report.passed:
        report.outcome = "failed"
        report.longrepr = f"an API key appeared in captured output (or prompt or completion text): {leaked}"


# The kind of each test is the folder it lives in, as a marker: `pytest -m unit` runs the pure,
# millisecond tests alone (a few seconds in all), `-m "not e2e and not interop"` skips the ones that
# need Prometheus, nginx, Chromium, Node or third-party servers.
KINDS = {
    "unit": ("unit",),
    "integration": ("integration",),
    "e2e": ("e2e",),
    "hostile": ("hostile",),
    "interop": ("interop", "e2e"),
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        for part in item.path.parent.parts[::-1]:
            if part in KINDS:
                for kind in KINDS[part]:
                    item.add_marker(getattr(pytest.mark, kind))
                break


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """Tests go to the workers one by one, as with `--dist load`, except that an interop file's
    all go to one worker: its third-party servers start once, in its module fixture. Spread
    over both workers, the matrix started LiteLLM, aimock and llmock and ran every case twice
    (50 s each). (`--dist loadgroup` would do it, but xdist 3.8 names the group in a field
    pytest 9.2 no longer reads.) The biggest groups go first (xdist's default for scopes)."""
    if config.getvalue("dist") != "load":
        return None  # a --dist asked for on the command line
    from xdist.scheduler import LoadScopeScheduling

    class OneWorkerPerInteropFile(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            return nodeid.split("::", 1)[0] if nodeid.startswith("tests/interop/") else nodeid

    return OneWorkerPerInteropFile(config, log)


# Tests on real sockets run timed streams through gateways in this process's own event loop. A
# full collection of the heap the unit tests leave behind took up to 300 ms (gc.callbacks,
# the oldest-dependencies run), long enough for a gateway pacing 10 ms frames to send a whole
# stream at once: the proxy then rightly judged it `buffered`. So, as `serve` does at start-up,
# what exists before such a test is frozen (never traversed by the collector during it), and
# the full collection runs between tests, every COLLECT_EVERY of them.
COLLECT_EVERY = 25
_since_collect = [0]


@pytest.fixture(autouse=True)
def _collector_between_timed_tests(request: pytest.FixtureRequest) -> None:
    if not any(request.node.get_closest_marker(kind) for kind in ("integration", "hostile", "e2e")):
        return
    _since_collect[0] += 1
    if _since_collect[0] >= COLLECT_EVERY:
        _since_collect[0] = 0
        gc.unfreeze()
        gc.collect()
    gc.freeze()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    leaks = [(nodeid, leaked_keys(text)) for nodeid, text in _CAPTURED if leaked_keys(text)]
    if leaks:
        print(f"\nAPI keys appeared in captured output: {leaks}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


class RecordingSink:
    """Collects audit records so tests can assert on exactly what the sinks received, and
    scans each (its log fields and its evidence) for prompt and completion text."""

    def __init__(self) -> None:
        self.records: list[AuditRecord] = []
        self.leaks: list[tuple[str, list[str]]] = []
        self._changed = asyncio.Event()

    def stream_started(self, rec: AuditRecord) -> None:
        pass

    def stream_ended(self, rec: AuditRecord) -> None:
        pass

    def record(self, rec: AuditRecord) -> None:
        self.records.append(rec)
        self._changed.set()
        fields = record_fields(rec)
        doc = evidence.build(rec, fields, Redactor())
        leaked = leaked_texts(orjson.dumps(doc).decode())
        if leaked:
            self.leaks.append((rec.trace_id, leaked))

    async def wait(self, n: int = 1, timeout: float = 5.0) -> list[AuditRecord]:
        async def until() -> None:
            while len(self.records) < n:
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(until(), timeout)
        return self.records


@dataclasses.dataclass
class RunningProxy:
    service: Service
    sink: RecordingSink

    @property
    def url(self) -> URL:
        return URL(f"http://127.0.0.1:{self.service.proxy.port}")

    @property
    def metrics_url(self) -> URL:
        return URL(f"http://127.0.0.1:{self.service.metrics_port}")

    def metric(self, name: str, **labels: str) -> float | None:
        """A sample; every stream and request metric is labelled by side (`baseline` here
        unless told)."""
        if not name.startswith(("sse_audit_canary_", "sse_audit_connections_closed", "sse_audit_log_lines")):
            labels.setdefault("upstream", "baseline")
        return self.service.registry.get_sample_value(name, labels)

    async def record(self, timeout: float = 5.0) -> AuditRecord:
        return (await self.sink.wait(1, timeout))[-1]


async def start_app(app: web.Application, **runner_kwargs: Any) -> tuple[web.AppRunner, URL]:
    runner = web.AppRunner(app, access_log=None, **runner_kwargs)
    await runner.setup()
    port = await listen(runner, "127.0.0.1", 0)
    return runner, URL(f"http://127.0.0.1:{port}")


@pytest.fixture
async def upstream() -> AsyncIterator[Callable[..., Awaitable[URL]]]:
    """`await upstream(handler)` serves `handler` for every path; returns its base URL."""
    runners: list[web.AppRunner] = []

    async def start(handler: Handler, **runner_kwargs: Any) -> URL:
        app = web.Application(middlewares=[_note_keys])
        app.router.add_route("*", "/{tail:.*}", handler)
        runner, url = await start_app(app, **runner_kwargs)
        runners.append(runner)
        return url

    yield start
    for runner in runners:
        await runner.cleanup()


@pytest.fixture
async def proxy() -> AsyncIterator[Callable[..., Awaitable[RunningProxy]]]:
    """`await proxy(upstream_url, **ProxyConfig overrides)` starts the real proxy."""
    services: list[Service] = []
    sinks: list[RecordingSink] = []

    async def start(
        upstream_url: URL,
        *,
        max_models: int = 100,
        recent_streams: int = 1000,
        canary: Any = None,
        **overrides: Any,
    ) -> RunningProxy:
        overrides.setdefault("thresholds", Thresholds())
        overrides.setdefault("drain_timeout", 1.0)  # teardown never waits long on a hung stream
        config = ServiceConfig(
            proxy=ProxyConfig(upstream=upstream_url, host="127.0.0.1", port=0, **overrides),
            metrics_host="127.0.0.1",
            metrics_port=0,
            max_models=max_models,
            recent_streams=recent_streams,
            **({} if canary is None else {"canary": canary}),
        )
        sink = RecordingSink()
        sinks.append(sink)
        service = Service(config, registry=CollectorRegistry(), extra_sinks=[sink])
        await service.start()
        services.append(service)
        return RunningProxy(service, sink)

    yield start
    for service in services:
        await service.close()
    leaks = [leak for sink in sinks for leak in sink.leaks]
    assert not leaks, f"prompt or completion text in an audit record or its evidence: {leaks}"


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """A plain client that leaves bodies compressed, as a byte-exact comparison needs."""
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        yield session


@pytest.fixture
async def demo_gateway() -> AsyncIterator[Callable[..., Awaitable[URL]]]:
    """`await demo_gateway(**Timing overrides)` serves the demo gateway; returns its base URL."""
    from sse_audit_proxy.tools.gateway import Timing, start

    runners: list[web.AppRunner] = []

    async def start_gateway(scenario: str | None = None, **timing: Any) -> URL:
        runner, url = await start(Timing(**timing), scenario=scenario)
        runners.append(runner)
        return url

    yield start_gateway
    for runner in runners:
        await runner.cleanup()


@pytest.fixture
def tls_upstream(tmp_path: Path) -> tuple[ssl.SSLContext, Path]:
    """A server context with a certificate for 127.0.0.1, and the file of the CA that signed it."""
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    return context, ca_file
