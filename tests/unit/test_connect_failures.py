"""What a client is told when the proxy could not connect upstream: the proxy's own want of a
resource (descriptors, local ports) is named, so the gateway is not blamed for it."""

from __future__ import annotations

import errno

import pytest
from yarl import URL

from sse_audit_proxy.server.proxy import ProxyConfig, upstream_error
from sse_audit_proxy.server.upstream import _unreachable

CONFIG = ProxyConfig(upstream=URL("http://127.0.0.1:1"))


@pytest.mark.parametrize(
    ("code", "named"),
    [(errno.EMFILE, "file descriptors (EMFILE)"), (errno.EADDRNOTAVAIL, "local ports (EADDRNOTAVAIL)")],
)
def test_a_local_limit_is_named(code: int, named: str) -> None:
    status, kind, message = upstream_error(_unreachable(OSError(code, "x")), CONFIG)
    assert (status, kind) == (502, "upstream_unreachable")
    assert message.startswith("could not connect to upstream: the ") and message.endswith(named)


@pytest.mark.parametrize("exc", [ConnectionRefusedError(errno.ECONNREFUSED, "refused"), None])
def test_the_upstream_refusing_is_said_as_before(exc: OSError | None) -> None:
    assert upstream_error(_unreachable(exc), CONFIG)[2] == "could not connect to upstream"
