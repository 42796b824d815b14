"""The benchmark's processes: starting, pinning and accounting for them (Linux /proc).

CPU time is each thread's time on a CPU (/proc/<pid>/task/<tid>/schedstat, nanoseconds: user
and system alike; /proc/<pid>/stat's utime + stime in 10 ms ticks where schedstat is missing),
summed over a process and its live descendants, so `serve --workers N` and nginx's master and
worker are counted whole; memory is VmRSS from /proc/<pid>/status, summed the same way. No
dependency beyond the standard library.
"""

from __future__ import annotations

import contextlib
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import orjson

_TICK = os.sysconf("SC_CLK_TCK")
START_TIMEOUT = 30.0


class StartFailed(Exception):
    pass


# /proc -------------------------------------------------------------------------------------


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold spaces: split after it.
    return raw[raw.rindex(")") + 2 :].split()


def descendants(pid: int) -> list[int]:
    """`pid` and every live process below it."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields is not None:
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        todo.extend(children.get(p, ()))
    return found


def cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds of one process (0 when it is gone)."""
    return _cpu(pid) or 0.0


def cpu_by_pid(pids: Iterable[int]) -> dict[int, float]:
    """CPU seconds of each process still there: one that has gone has no figure (read as 0, a
    target that died during a run came out at minus its CPU before)."""
    return {pid: seconds for pid in pids if (seconds := _cpu(pid)) is not None}


def _cpu(pid: int) -> float | None:
    """User plus system CPU seconds of one process, None when it is gone.

    Ticks are too coarse for a short run (a smoke run's proxy spends a few milliseconds), so
    the threads' nanosecond run times are summed; a thread that has exited drops out of that
    sum, but neither the proxy nor nginx ends threads while serving.
    """
    total = 0
    try:
        for task in os.scandir(f"/proc/{pid}/task"):
            with open(f"{task.path}/schedstat", "rb") as f:
                total += int(f.read().split(maxsplit=1)[0])
    except (OSError, ValueError, IndexError):
        total = -1
    if total >= 0:
        return total / 1e9
    fields = _stat_fields(pid)
    if fields is None:
        return None
    # Fields 14 and 15 of stat (utime, stime), counted from field 3 after the name.
    return (int(fields[11]) + int(fields[12])) / _TICK


def rss_bytes(pid: int) -> int:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    found = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
    return int(found.group(1)) * 1024 if found else 0


def tree_rss(pid: int) -> int:
    return sum(rss_bytes(p) for p in descendants(pid))


def load_average() -> tuple[float, float, float]:
    return os.getloadavg()


def raise_open_files_limit() -> None:
    """Thousands of streams need thousands of sockets: lift the soft limit to the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# Pinning -----------------------------------------------------------------------------------


@dataclass(slots=True, frozen=True)
class Placement:
    """Which CPUs the proxy under test and the harness (gateway, clients) may use."""

    proxy: frozenset[int] | None
    harness: frozenset[int] | None

    @property
    def pinned(self) -> bool:
        return self.proxy is not None


def placement(pin: bool, proxy_cores: int) -> Placement:
    """With pinning, the proxy gets the last `proxy_cores` CPUs and the harness the rest; on a
    machine with no CPU left over, the harness shares all of them."""
    if not pin:
        return Placement(None, None)
    cpus = sorted(os.sched_getaffinity(0))
    take = min(proxy_cores, len(cpus))
    proxy = frozenset(cpus[-take:])
    rest = frozenset(cpus[:-take]) or frozenset(cpus)
    return Placement(proxy, rest)


def pin_tree(pid: int, cpus: frozenset[int] | None) -> None:
    if not cpus:
        return
    for p in descendants(pid):
        with contextlib.suppress(OSError):
            os.sched_setaffinity(p, cpus)


# Child processes ---------------------------------------------------------------------------


def _env() -> dict[str, str]:
    """The environment without settings that would change the processes under test."""
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("SSE_AUDIT_") and k != "PROMETHEUS_MULTIPROC_DIR"
    }


@dataclass
class Child:
    name: str
    popen: subprocess.Popen[bytes]
    url: str
    log: IO[bytes] | None = None
    workdir: str | None = None  # a temporary directory of its own, removed when it stops

    @property
    def pid(self) -> int:
        return self.popen.pid

    def stop(self, timeout: float = 10.0) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5.0)
        if self.log is not None:
            self.log.close()
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def log_lines(self) -> list[dict[str, object]]:
        """The JSON lines the child logged (the proxy: one per stream)."""
        if self.log is None:
            return []
        self.log.flush()
        lines = []
        for raw in Path(self.log.name).read_bytes().splitlines():
            with contextlib.suppress(orjson.JSONDecodeError):
                line = orjson.loads(raw)
                if isinstance(line, dict):
                    lines.append(line)
        return lines


def _module(*args: str) -> list[str]:
    return [sys.executable, "-m", "sse_audit_proxy", *args]


def _wait_for(
    popen: subprocess.Popen[bytes], log_path: str, find: Callable[[str], str | None], what: str
) -> str:
    """Poll the child's output file until `find` gets what it looks for from it."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        text = Path(log_path).read_text(errors="replace")
        found = find(text)
        if found:
            return found
        if popen.poll() is not None:
            raise StartFailed(f"{what} exited with status {popen.returncode}: {text.strip()[-500:]}")
        time.sleep(0.02)
    popen.kill()
    raise StartFailed(f"{what} did not start within {START_TIMEOUT:.0f} s")


def spawn(
    name: str, args: list[str], cpus: frozenset[int] | None, cwd: str | None = None
) -> tuple[subprocess.Popen[bytes], IO[bytes]]:
    # Closed (and so deleted) by Child.stop.
    log = tempfile.NamedTemporaryFile(prefix=f"sse-audit-bench-{name}-", suffix=".log")  # noqa: SIM115
    popen = subprocess.Popen(
        args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=_env(), cwd=cwd
    )
    if cpus:
        os.sched_setaffinity(popen.pid, cpus)  # before it spawns anything: children inherit it
    return popen, log


def _gateway_url(text: str) -> str | None:
    found = re.search(r"listening on (http://\S+)", text)
    return found.group(1) if found else None


def _proxy_url(text: str) -> str | None:
    """The supervisor's (or single process's) `proxy_started` line, not a worker's."""
    for raw in text.splitlines():
        if '"proxy_started"' not in raw:
            continue
        with contextlib.suppress(orjson.JSONDecodeError):
            line = orjson.loads(raw)
            if isinstance(line, dict) and "worker" not in line:
                return str(line["listen"])
    return None


def start_gateway(port: int, cpus: frozenset[int] | None) -> Child:
    popen, log = spawn(
        "gateway", _module("gateway", "--host", "127.0.0.1", "--port", str(port), "--jitter", "0"), cpus
    )
    url = _wait_for(popen, log.name, _gateway_url, "the demo gateway")
    return Child("gateway", popen, url, log)


def start_proxy(upstream: str, workers: int, cpus: frozenset[int] | None, source: str | None = None) -> Child:
    """`serve`, from this installation or, with `source`, from the `sse_audit_proxy` package
    in that directory (`python -m` finds the working directory's package first)."""
    popen, log = spawn(
        "proxy",
        _module(
            "serve",
            "--upstream",
            upstream,
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--metrics-port",
            "0",
            "--workers",
            str(workers),
            "--drain-timeout",
            "2",
        ),
        cpus,
        cwd=source,
    )
    url = _wait_for(popen, log.name, _proxy_url, "the proxy")
    pin_tree(popen.pid, cpus)  # workers started before the affinity was set, if any
    return Child("proxy", popen, url, log)
