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


def read_key_file(path: str) -> list[str]:
    """One key a line; blank lines and `#` comments are skipped. A leading byte-order mark (an
    editor's) is not part of the first key: with it, that key was refused 401."""
    with open(path, encoding="utf-8-sig") as f:
        lines = [line.strip() for line in f]
    return [line for line in lines if line and not line.startswith("#")]
