"""Optional inbound authentication: which presented API keys the proxy lets through.

Pure: the keys come in at start-up, request headers come in per request. Only SHA-256
digests of the keys are kept, so the allowed keys never sit in memory in the clear and
never reach a log line or an exception message.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping

# Where OpenAI-compatible clients put a key: OpenAI (Bearer), Azure (api-key), Anthropic-style.
KEY_HEADERS = ("api-key", "x-api-key")


def _digest(key: str) -> bytes:
    # A presented key is a header value: its bytes, read into str with surrogateescape (a
    # byte that is not UTF-8 made encode() raise: a 500 for any unauthenticated client).
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()


class KeyCheck:
    """Allows a request when any of its key headers carries one of the allowed keys."""

    __slots__ = ("_digests",)

    def __init__(self, keys: Iterable[str]) -> None:
        self._digests = frozenset(_digest(k) for k in keys if k)

    def __bool__(self) -> bool:
        return bool(self._digests)

    def allows(self, headers: Mapping[str, str]) -> bool:
        # Comparing digests, not keys: a set lookup on a hash leaks nothing useful in timing.
        return any(_digest(key) in self._digests for key in presented_keys(headers))


def presented_keys(headers: Mapping[str, str]) -> list[str]:
    keys: list[str] = []
    auth = headers.get("Authorization", "")
    scheme, _, token = auth.strip().partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        keys.append(token.strip())
    for name in KEY_HEADERS:
        value = headers.get(name, "").strip()
        if value:
            keys.append(value)
    return keys


def key_problem(key: str) -> str | None:
    """Why `key` cannot be a key a client presents, or None. Never quotes it. A key with a space
    or a comma was kept whole and matched no client: every request 401, nothing said (an
    outside review: `k1,k2` in a key file, `key # note`, a pasted `Bearer KEY`)."""
    if key.lower().startswith(("bearer ", "basic ")):
        return "begins with an auth scheme (give the key alone, not the header's value)"
    if any(c.isspace() or c == "," or not c.isprintable() for c in key):
        return (
            "has a space, a comma or a control character in it (one key a line; comments on lines "
            "of their own)"
        )
    return None


def read_key_file(path: str) -> list[str]:
    """One key a line; blank lines and `#` comments are skipped. A leading byte-order mark (an
    editor's) is not part of the first key: with it, that key was refused 401. A line that
    cannot be a key is a ValueError naming its number, not the key."""
    with open(path, encoding="utf-8-sig") as f:
        lines = [line.strip() for line in f]
    keys = []
    for number, line in enumerate(lines, 1):
        if line and not line.startswith("#"):
            if (problem := key_problem(line)) is not None:
                raise ValueError(f"line {number} {problem}")
            keys.append(line)
    return keys
