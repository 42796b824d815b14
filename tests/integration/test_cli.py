"""The real command line: one-line errors for bad configuration, env vars, `python -m`."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

EXE = [sys.executable, "-m", "sse_audit_proxy"]


def run(
    *args: str, env: dict[str, str] | None = None, timeout: float = 20
) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("SSE_AUDIT_")}
    full_env.update(env or {})
    return subprocess.run(
        [*EXE, *args], capture_output=True, text=True, timeout=timeout, env=full_env, check=False
    )


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("sse-audit-proxy: error:")
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in lines[0]


@pytest.mark.parametrize("url", ["not a url", "ftp://host", "http://", "http://host:99999"])
def test_unparseable_upstream_is_a_one_line_error(url: str) -> None:
    assert_one_line_error(run("serve", "--upstream", url), "--upstream")


def test_unknown_flag_is_a_one_line_error() -> None:
    assert_one_line_error(run("serve", "--upstream", "http://x", "--frobnicate"), "--frobnicate")


def test_bad_value_in_environment_names_the_variable() -> None:
    proc = run("serve", env={"SSE_AUDIT_UPSTREAM": "http://127.0.0.1:1", "SSE_AUDIT_PORT": "eighty"})
    assert_one_line_error(proc, "SSE_AUDIT_PORT")


def test_port_in_use_is_a_one_line_error() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = run("serve", "--upstream", "http://127.0.0.1:1", "--port", str(port), "--metrics-port", "0")
    assert_one_line_error(proc, "address already in use", str(port))


def test_help_documents_every_flag_with_its_environment_variable() -> None:
    proc = run("serve", "--help")
    assert proc.returncode == 0
    for flag in (
        "--upstream",
        "--host",
        "--port",
        "--metrics-host",
        "--metrics-port",
        "--idle-timeout",
        "--max-models",
        "--log-format",
    ):
        assert flag in proc.stdout
        assert "SSE_AUDIT_" + flag[2:].replace("-", "_").upper() in proc.stdout
