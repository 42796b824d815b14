"""The third-party servers of the interop matrix, and the real `serve` command, as child processes.

Every server binds 127.0.0.1 on a free port. A server that cannot be installed or started fails
the matrix under CI (`CI=true`); a developer without it gets a skip that says what is missing.
"""

from __future__ import annotations

import contextlib
import ctypes
import http.server
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).parent
NODE_MODULES = HERE / "node_modules"
MASTER_KEY = "sk-interop-master-0123456789abcdef"  # LiteLLM's admin key, loopback only
API_KEY = "sk-interop-client-0123456789abcdef"  # what clients send to the mock servers

# Versions the matrix was written against (pyproject's `test` extra and package-lock.json pin them).
LITELLM_VERSION = "1.108.7"
LLMOCK_VERSION = "0.2.2"
AIMOCK_VERSION = "1.43.0"


def _stop(proc: subprocess.Popen[Any]) -> None:
    """SIGTERM, then SIGKILL after 10 s."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def unavailable(what: str) -> None:
    """Missing third-party software: a failure under CI, a skip with the reason elsewhere."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"interop: {what} (CI must install it: see .ci/run)", pytrace=False)
    pytest.skip(
        f"interop: {what}; install them with `pip install -e '.[test]'` and "
        f"`npm ci --prefix tests/interop` (CI=true turns this skip into a failure)"
    )


NPM_PACKAGES = (
    "@copilotkit/aimock",
    "openai",
    "ai",
    "@ai-sdk/openai",
    "@google/genai",
    "workers-ai-provider",
)
PYPI_PACKAGES = ("litellm", "llmock", "anthropic", "openai", "google.genai", "huggingface_hub")


def require_all() -> None:
    """Everything the matrix runs, checked before any server starts."""
    missing = [f"the `{cmd}` command" for cmd in ("node", "curl") if shutil.which(cmd) is None]
    missing += [
        f"npm package {name}" for name in NPM_PACKAGES if not (NODE_MODULES / name / "package.json").exists()
    ]
    missing += [f"Python package {name}" for name in PYPI_PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        unavailable("missing " + ", ".join(missing))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _die_with_pytest() -> None:
    """In the child before exec: SIGTERM when pytest dies, however it dies (Linux prctl)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def wait_http(url: str, timeout: float, proc: subprocess.Popen[bytes], name: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode} before answering {url}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status < 500:
                    return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{name} did not answer {url} within {timeout} s")


@contextlib.contextmanager
def child(
    name: str,
    argv: list[str],
    ready_url: str,
    *,
    timeout: float = 60.0,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    log: Path | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    out = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115 (closed below)
    # Same process group as pytest: a Ctrl-C or a kill of the group ends the servers too.
    proc = subprocess.Popen(
        argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd, preexec_fn=_die_with_pytest
    )
    origin = "/".join(ready_url.split("/")[:3])
    try:
        try:
            wait_http(ready_url, timeout, proc, name)
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}\n{_tail(log)}") from None
        _RUNNING[origin] = (name, proc, log)
        yield proc
    finally:
        _RUNNING.pop(origin, None)
        _stop(proc)
        if log:
            out.close()  # type: ignore[union-attr]


# The servers `child` started and has not stopped yet, by origin (scheme://host:port).
_RUNNING: dict[str, tuple[str, subprocess.Popen[bytes], Path | None]] = {}


def _tail(log: Path | None) -> str:
    return log.read_text(errors="replace")[-2000:] if log else ""


def exited(url: str) -> str:
    """Why the server at `url` is gone ("" while it runs): its exit code and the end of its log.
    A third-party server that dies mid-matrix would otherwise show only as refused connections."""
    origin = "/".join(url.split("/")[:3])
    name, proc, log = _RUNNING.get(origin, ("", None, None))
    if proc is None or proc.poll() is None:
        return ""
    return f"{name} exited with {proc.returncode} while the matrix ran; its log ends:\n{_tail(log)}"


def quiet_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SSE_AUDIT_")}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    # LiteLLM: the model cost map from its own package (it would fetch one from the internet).
    env.update(
        LITELLM_LOCAL_MODEL_COST_MAP="True", LITELLM_TELEMETRY="False", NO_COLOR="1", DISABLE_ADMIN_UI="True"
    )
    return env


def bin_of(name: str) -> str:
    path = Path(sys.executable).parent / name
    if path.exists():
        return str(path)
    found = shutil.which(name)
    if found is None:
        unavailable(f"the `{name}` command is not installed")
    return str(found)


@contextlib.contextmanager
def demo_gateway(tmp: Path) -> Iterator[str]:
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "sse_audit_proxy",
        "gateway",
        "--port",
        str(port),
        "--ttft",
        "0.05",
        "--tokens-per-second",
        "100",
        "--fault-delay",
        "0.3",
    ]
    url = f"http://127.0.0.1:{port}"
    with child("demo gateway", argv, url + "/v1/models", env=quiet_env(), log=tmp / "gateway.log"):
        yield url


LITELLM_CONFIG = """\
model_list:
  - model_name: mock-gpt
    litellm_params:
      model: openai/mock-gpt
      api_key: sk-unused-by-the-mock
      mock_response: "Hello from the LiteLLM mock"
  - model_name: "demo-*"
    litellm_params:
      model: "openai/demo-*"
      api_base: {gateway}/v1
      api_key: sk-unused-by-the-gateway
      max_retries: 0
general_settings:
  master_key: {key}
litellm_settings:
  telemetry: false
  num_retries: 0
"""


@contextlib.contextmanager
def litellm(tmp: Path, gateway: str) -> Iterator[str]:
    # Looked up, not imported: importing litellm fetches a price list from the internet.
    if importlib.util.find_spec("litellm") is None:
        unavailable("LiteLLM (`litellm[proxy]`) is not installed")
    config = tmp / "litellm.yaml"
    config.write_text(LITELLM_CONFIG.format(gateway=gateway, key=MASTER_KEY))
    port = free_port()
    argv = [bin_of("litellm"), "--config", str(config), "--host", "127.0.0.1", "--port", str(port)]
    url = f"http://127.0.0.1:{port}"
    with child(
        "LiteLLM",
        argv,
        url + "/health/liveliness",
        env=quiet_env(),
        cwd=tmp,
        log=tmp / "litellm.log",
        timeout=90,
    ):
        yield url


# aimock fixtures: matched on the last user message.
AIMOCK_FIXTURES = {
    "fixtures": [
        {
            "match": {"userMessage": "weather"},
            "response": {
                "toolCalls": [{"name": "get_weather", "arguments": {"location": "Paris", "unit": "celsius"}}]
            },
        },
        {
            "match": {"userMessage": "long story"},
            "response": {"content": " ".join(["word"] * 200)},
            "latency": 15,
            "chunkSize": 8,
        },
        # Without a latency aimock 1.43 buffers the chunks and the cut drops even the head.
        {
            "match": {"userMessage": "cut short"},
            "response": {"content": " ".join(["word"] * 100)},
            "truncateAfterChunks": 5,
            "chunkSize": 8,
            "latency": 10,
        },
        {"match": {"userMessage": "hello"}, "response": {"content": "Hello there, streaming world!"}},
        # Transcriptions (a form): streamed for `stream=true` unless the model is whisper-1, which
        # aimock answers with one JSON document, as OpenAI does (whisper-1 ignores `stream`).
        {
            "match": {"endpoint": "transcription"},
            "response": {"transcription": {"text": "one two three four five six seven eight nine ten"}},
            "latency": 10,
            "chunkSize": 6,
        },
    ]
}


@contextlib.contextmanager
def aimock(tmp: Path) -> Iterator[str]:
    cli = NODE_MODULES / "@copilotkit" / "aimock" / "dist" / "cli.js"
    node = shutil.which("node")
    if node is None or not cli.exists():
        unavailable("@copilotkit/aimock (npm) or node is not installed")
    fixtures = tmp / "aimock.json"
    fixtures.write_text(json.dumps(AIMOCK_FIXTURES))
    port = free_port()
    argv = [
        str(node),
        str(cli),
        "-p",
        str(port),
        "-h",
        "127.0.0.1",
        "-f",
        str(fixtures),
        "--log-level",
        "warn",
    ]
    url = f"http://127.0.0.1:{port}"
    with child("aimock", argv, url + "/health", env=quiet_env(), log=tmp / "aimock.log"):
        yield url


@contextlib.contextmanager
def llmock(tmp: Path) -> Iterator[str]:
    if importlib.util.find_spec("llmock") is None:
        unavailable("llmock (PyPI) is not installed")
    port = free_port()
    argv = [
        bin_of("llmock"),
        "serve",
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
        "--log-level",
        "warning",
        "--response-style",
        "static",
        "--stream-chunk-delay-ms",
        "5",
    ]
    url = f"http://127.0.0.1:{port}"
    env = quiet_env() | {"COLUMNS": "120"}
    with child("llmock", argv, url + "/v1/models", env=env, log=tmp / "llmock.log"):
        yield url


@dataclass
class Serve:
    """`sse-audit-proxy serve` in front of one upstream; its `stream_end` lines by trace ID."""

    proc: subprocess.Popen[bytes]
    url: str = ""
    metrics: str = ""
    lines: list[dict[str, Any]] = field(default_factory=list)
    cond: threading.Condition = field(default_factory=threading.Condition)

    def read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            try:
                line = json.loads(raw)
            except ValueError:
                continue
            with self.cond:
                self.lines.append(line)
                if line.get("event") == "proxy_started" and "worker" not in line:
                    self.url, self.metrics = line["listen"], line["metrics"]
                self.cond.notify_all()
        with self.cond:
            self.cond.notify_all()

    def record(self, trace_id: str, timeout: float = 10.0) -> dict[str, Any]:
        def found() -> dict[str, Any] | None:
            return next(
                (
                    x
                    for x in self.lines
                    if x.get("trace_id") == trace_id and x.get("event") in ("stream_end", "request_end")
                ),
                None,
            )

        with self.cond:
            if not self.cond.wait_for(lambda: found() is not None or self.proc.poll() is not None, timeout):
                raise AssertionError(f"no record for trace {trace_id} within {timeout} s")
            line = found()
        assert line is not None, f"serve exited ({self.proc.returncode}) without a record"
        return line


@contextlib.contextmanager
def serve(upstream: str) -> Iterator[Serve]:
    argv = [
        sys.executable,
        "-m",
        "sse_audit_proxy",
        "serve",
        "--upstream",
        upstream,
        "--port",
        "0",
        "--metrics-port",
        "0",
        "--drain-timeout",
        "1",
    ]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, env=quiet_env(), preexec_fn=_die_with_pytest)
    running = Serve(proc)
    reader = threading.Thread(target=running.read, daemon=True)
    reader.start()
    try:
        with running.cond:
            running.cond.wait_for(lambda: running.url or proc.poll() is not None, 30)
        if not running.url:
            raise RuntimeError(f"serve did not start (exit {proc.poll()})")
        yield running
    finally:
        _stop(proc)
        reader.join(5)


@contextlib.contextmanager
def replay(answer: Callable[[str], bytes], content_type: str = "text/event-stream") -> Iterator[str]:
    """A recorded upstream: each POST is answered with `answer(path)`, whole, with its length."""

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            body = answer(self.path)
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
