"""Inbound auth fails closed (issue 12, item 6): an empty key list given explicitly is bad
configuration (one-line error, exit 2), never a proxy quietly running without auth."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


def serve(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("SSE_AUDIT_")}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "sse_audit_proxy",
            "serve",
            "--upstream",
            "http://127.0.0.1:9",
            "--port",
            "0",
            "--metrics-port",
            "0",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=20,
        env={**base, **(env or {})},
    )


@pytest.mark.parametrize("value", ["", " , ", ",", " ,, ,"])
def test_an_empty_require_key_flag_is_a_one_line_error(value: str) -> None:
    run = serve("--require-key", value)
    assert run.returncode == 2
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "--require-key" in lines[0] and "no API keys" in lines[0]
    assert run.stdout == ""  # never started


@pytest.mark.parametrize("value", ["", " ", " , ", ",,"])
def test_an_empty_require_key_env_var_is_a_one_line_error(value: str) -> None:
    run = serve(env={"SSE_AUDIT_REQUIRE_KEY": value})
    assert run.returncode == 2
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "no API keys" in lines[0]


def test_an_empty_require_key_file_env_var_is_a_one_line_error() -> None:
    """A templated key-file path that came out empty started a proxy with no auth at all."""
    run = serve(env={"SSE_AUDIT_REQUIRE_KEY_FILE": ""})
    assert run.returncode == 2
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "SSE_AUDIT_REQUIRE_KEY_FILE" in lines[0]
    assert run.stdout == ""  # never started


def test_an_empty_require_key_is_an_error_even_beside_a_key_file(tmp_path: Path) -> None:
    keys = tmp_path / "keys.txt"
    keys.write_text("sk-from-the-file-0123456789\n")
    run = serve("--require-key", " , ", "--require-key-file", str(keys))
    assert run.returncode == 2 and "no API keys" in run.stderr
