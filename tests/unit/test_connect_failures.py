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


@pytest.mark.parametrize(
    ("exc", "said"),
    [
        (ConnectionRefusedError(errno.ECONNREFUSED, "refused"), ": connection refused"),
        (OSError(errno.EHOSTUNREACH, "x"), ": no route to host"),
        (OSError(errno.ENETUNREACH, "x"), ": network unreachable"),
        (OSError(errno.EPERM, "x"), ""),  # an uncommon one: not guessed at
        (None, ""),  # no address to connect to
    ],
)
def test_the_upstreams_side_of_a_failed_connect_is_said_in_a_few_words(
    exc: OSError | None, said: str
) -> None:
    """The 502 said "could not connect to upstream" alone; why was only in a log line that
    appeared once something asked /readyz (an outside review of the docs)."""
    assert upstream_error(_unreachable(exc), CONFIG)[2] == "could not connect to upstream" + said
