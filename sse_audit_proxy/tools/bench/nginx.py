"""`--against nginx`: nginx started by the bench as a pure pass-through to the demo gateway.

The configuration is TEMPLATE with its two placeholders filled in; docs/tools/bench.md shows
TEMPLATE verbatim (a test checks the two are equal), so what the table compares
against is documented exactly. nginx is started afresh for every run, like the proxy, so each
run's memory and CPU are its own.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import time
from pathlib import Path

from yarl import URL

from sse_audit_proxy.tools.bench import procs

NAME = "nginx"  # `--against nginx`: this word alone, not NAME=URL
INSTALL_HINT = "apt-get install -y nginx-light (or nginx)"
# Where nginx lives when a non-root PATH leaves out the sbin directories.
_SBIN = ("/usr/sbin", "/usr/local/sbin", "/usr/local/nginx/sbin")

# @GATEWAY@: the demo gateway's host:port; @LISTEN@: the address nginx listens on.
TEMPLATE = """\
worker_processes 1;                  # one worker, like one proxy worker (--pin pins both alike)
worker_rlimit_nofile 20000;          # two sockets per stream, 1,000 streams, with room to spare
daemon off;                          # the bench runs it in the foreground and stops it
pid nginx.pid;                       # this and the temp paths: in the bench's prefix (-p) dir
error_log stderr warn;
events { worker_connections 10000; }
http {
    access_log off;
    client_body_temp_path body;
    proxy_temp_path proxy;
    upstream gateway { server @GATEWAY@; keepalive 512; }
    server {
        listen @LISTEN@ backlog=4096;
        location / {
            proxy_pass http://gateway;
            proxy_http_version 1.1;          # keep-alive to the upstream, chunked relayed as is
            proxy_set_header Connection "";  # ... and no "Connection: close" to it
            proxy_buffering off;             # each upstream read is written to the client at once
            proxy_request_buffering off;
        }
    }
}
"""


def render(gateway: str, listen: str) -> str:
    """TEMPLATE for a gateway at `gateway` and nginx at `listen` (both host:port)."""
    return TEMPLATE.replace("@GATEWAY@", gateway).replace("@LISTEN@", listen)


def find() -> str | None:
    """The nginx executable, or None when it is not installed."""
    path = os.pathsep.join([os.environ.get("PATH", ""), *_SBIN])
    return shutil.which("nginx", path=path)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def start(gateway_url: str, cpus: frozenset[int] | None) -> procs.Child:
    """nginx (master and one worker) in front of the gateway, on a free loopback port."""
    binary = find()
    if binary is None:
        raise procs.StartFailed(f"nginx is not installed: {INSTALL_HINT}")
    gateway = URL(gateway_url)
    prefix = tempfile.mkdtemp(prefix="sse-audit-bench-nginx-")
    # The port is picked free and then bound by nginx: another process could take it in
    # between, so a failure to start is retried on a new port.
    error = procs.StartFailed("nginx did not start")
    for _ in range(3):
        try:
            child = _start(binary, prefix, f"{gateway.host}:{gateway.port}", cpus)
        except procs.StartFailed as exc:
            error = exc
            continue
        child.workdir = prefix  # removed when it stops
        return child
    shutil.rmtree(prefix, ignore_errors=True)
    raise error


def _start(binary: str, prefix: str, gateway: str, cpus: frozenset[int] | None) -> procs.Child:
    port = _free_port()
    conf = Path(prefix) / "nginx.conf"
    conf.write_text(render(gateway, f"127.0.0.1:{port}"))
    popen, log = procs.spawn(NAME, [binary, "-p", prefix + "/", "-c", str(conf)], cpus)
    child = procs.Child(NAME, popen, f"http://127.0.0.1:{port}", log)
    deadline = time.monotonic() + procs.START_TIMEOUT
    # The master listens before it forks its worker: ready once both are there.
    while not (_accepts(port) and len(procs.descendants(popen.pid)) >= 2):
        if popen.poll() is not None or time.monotonic() > deadline:
            text = Path(log.name).read_text(errors="replace").strip()
            child.stop()
            raise procs.StartFailed(f"nginx did not start (status {popen.returncode}): {text[-500:]}")
        time.sleep(0.02)
    procs.pin_tree(popen.pid, cpus)  # the worker, forked after the master was pinned, too
    return child
