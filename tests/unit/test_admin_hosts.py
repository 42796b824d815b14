"""Which Host may read stream records on the metrics port (server/admin.py): addresses and
localhost, which no web page can re-point by DNS, and the names given to --admin-hosts."""

from __future__ import annotations

import pytest

from sse_audit_proxy.server.admin import admin_hosts, trusted_host

NAMES = admin_hosts(["Inspector.Internal.", " audit.example "])


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "127.0.0.1:9464",
        "10.0.0.7:80",
        "[::1]",
        "[::1]:9464",
        "[fe80::1]:9464",
        "::1",
        "localhost",
        "LOCALHOST:9464",
        "localhost.",
        "inspector.internal",
        "inspector.internal.:9464",
        "AUDIT.EXAMPLE",
    ],
)
def test_addresses_localhost_and_named_hosts_are_trusted(host: str) -> None:
    assert trusted_host(host, NAMES)


@pytest.mark.parametrize(
    "host",
    [
        "evil.example",
        "evil.example:9464",
        "127.0.0.1.nip.io",
        "localhost.evil.example",
        "sub.localhost",
        "inspector.internal.evil.example",
        "internal",
        "0x7f.0.0.1",
        "[evil.example]:80",
        "",
    ],
)
def test_any_other_name_is_not(host: str) -> None:
    assert not trusted_host(host, NAMES)
