"""Secrets never reach a log line (issue 5, item 6).

Three layers are tested: the redaction processor itself; the real CLI's whole output while
keys go through every refusal and failure path; and the suite-wide scan in conftest.py, which
fails any test whose captured output (stdout, stderr, log records) contains a test key.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from sse_audit_proxy.sinks.redaction import REDACTED, Redactor
from tests.conftest import TEST_KEYS
from tests.reliability_support import (
    CHAT,
    STREAM_BODY,
    Tally,
    cli_proxy,
    complete_stream,
    raw_exchange,
    streaming_handler,
)

KEY = TEST_KEYS[0]


def test_redactor_blanks_secret_fields_headers_and_credentials_in_free_text() -> None:
    redact = Redactor(["X-Tenant-Token"])
    event = {
        "event": "boom",
        "authorization": f"Bearer {KEY}",
        "api_key": KEY,
        "x-tenant-token": "tenant-secret-value",
        "headers": {"Cookie": "session=abc", "Accept": "text/event-stream"},
        "exception": (
            "LineTooLong: Got more than 8190 bytes when reading: "
            f"b'Authorization: Bearer {KEY}AAAA'.\n"
            f"InvalidHeader: 'api-key: {KEY}' / X-Tenant-Token=tenant-secret-value\n"
            f"ValueError: token {KEY} rejected"
        ),
        "trace_id": "abc123",
        "status": 502,
        "anomalies": ["missing_done"],
    }
    out = redact(None, "info", dict(event))
    assert out["authorization"] == out["api_key"] == out["x-tenant-token"] == REDACTED
    assert out["headers"] == {"Cookie": REDACTED, "Accept": "text/event-stream"}
    assert KEY not in out["exception"] and "tenant-secret-value" not in out["exception"]
    assert "LineTooLong" in out["exception"]  # the message stays useful
    assert (out["event"], out["trace_id"], out["status"], out["anomalies"]) == (
        "boom",
        "abc123",
        502,
        ["missing_done"],
    )


def test_production_logging_chain_redacts_structlog_and_library_exceptions() -> None:
    # configure_logging is process-global: run it in a child process, as the CLI does.
    script = textwrap.dedent(f"""
        import logging, structlog
        from sse_audit_proxy.sinks.logs import configure_logging
        configure_logging("json", secret_headers=["X-Tenant-Token"])
        log = structlog.get_logger("t")
        try:
            raise ValueError("header line b'Authorization: Bearer {KEY}' rejected")
        except ValueError:
            log.exception("proxy_failed")
        try:
            raise RuntimeError("X-Tenant-Token: tenant-secret-value")
        except RuntimeError:
            logging.getLogger("aiohttp.server").exception("Error handling request")
        logging.getLogger("aiohttp.client").warning("api-key=%s", "{KEY}")
    """)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30)
    assert run.returncode == 0, run.stderr
    out = run.stdout + run.stderr
    assert KEY not in out and "tenant-secret-value" not in out
    assert out.count(REDACTED) >= 3
    assert "ValueError" in out and "RuntimeError" in out  # tracebacks still rendered


@pytest.mark.hostile  # in the hostile-peer suite (`pytest -m hostile`)
async def test_keys_sent_through_every_failure_path_never_appear_in_cli_output(
    upstream: Any, http: aiohttp.ClientSession
) -> None:
    tally = Tally()
    url = await upstream(streaming_handler(complete_stream(2), tally, reset_after=1))
    credentials = {
        "Authorization": f"Bearer {KEY}",
        "api-key": KEY,
        "x-api-key": KEY,
        "Cookie": f"session={KEY}",
        "X-Tenant-Token": KEY,
    }
    async with cli_proxy(
        url, "--require-key", KEY, "--max-body-bytes", "1k", "--secret-headers", "X-Tenant-Token"
    ) as (child, proxy_url, _):
        target = proxy_url / CHAT.lstrip("/")
        async with http.post(target, json=STREAM_BODY, headers=credentials) as resp:
            assert resp.status == 200  # upstream resets mid-stream: truncated
            with pytest.raises(aiohttp.ClientPayloadError):
                await resp.read()
        async with http.post(target, data=b"x" * 4096, headers=credentials) as resp:
            assert resp.status == 413
        async with http.post(
            target, json=STREAM_BODY, headers={"Authorization": "Bearer sk-wrong-0123456789abcd"}
        ) as r:
            assert r.status == 401
        port = proxy_url.port
        assert port is not None
        for head in (
            f"Authorization: Bearer {KEY}{'A' * 20000}",  # too long: 431
            f"Authorization: Bearer {KEY}\x01",
        ):  # control character: 400
            raw = await raw_exchange(port, f"GET /v1/models HTTP/1.1\r\n{head}\r\n\r\n".encode("latin-1"))
            assert KEY.encode() not in raw
        await asyncio.sleep(0.2)
        child.terminate()
        out = (await child.stdout.read()).decode()
        err = (await child.stderr.read()).decode()
    assert tally.requests == 1
    assert out.count('"request_end"') + out.count('"stream_end"') == 5
    assert KEY not in out and KEY not in err
    print(out, err)  # and into the suite-wide scan


CLEAN_AND_LEAKY = """
from tests.conftest import TEST_KEYS

def test_clean():
    print("nothing to see")

def test_leaky():
    print("oops", TEST_KEYS[0])
"""


def test_suite_wide_scan_fails_a_test_whose_output_contains_a_key(tmp_path: Path) -> None:
    # A throwaway suite with this project's conftest: the leaky test must fail, the clean
    # one pass, and the session exit non-zero.
    tests = tmp_path / "tests"
    tests.mkdir()
    (tests / "__init__.py").write_text("")
    shutil.copy(Path(__file__).resolve().parents[1] / "conftest.py", tests / "conftest.py")
    shutil.copy(
        Path(__file__).resolve().parents[1] / "reliability_support.py", tests / "reliability_support.py"
    )
    (tests / "test_scan.py").write_text(CLEAN_AND_LEAKY)
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rf", str(tests)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    summary = run.stdout.replace(KEY, "<key>")  # keep this test's own output clean
    assert run.returncode == 1, summary
    assert "1 failed, 1 passed" in summary
    assert "FAILED tests/test_scan.py::test_leaky" in summary
    assert "an API key appeared in captured output" in summary
