"""Which upstream a request goes to: the baseline, or the canary for a share of requests.

`Router.pick(headers)` is all the proxy asks. The share in force can change at any moment
(a ramp, a rollback, the guard tripping): it is one float read per request, so a change
applies to the next request, and a stream already open stays where it is.

Sticky routing hashes the value of one request header into [0, 100) with BLAKE2b: no shared
state, the same answer in every process and replica, and the same clients move to the canary
first as the share grows (a value below P is below every larger P too).
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Mapping
from dataclasses import dataclass

BASELINE = "baseline"
CANARY = "canary"
_HASH_SPAN = float(1 << 64)
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,39}")
_PERCENT = re.compile(r"[0-9]{1,3}(?:\.[0-9]{0,12})?|\.[0-9]{1,12}", re.ASCII)


@dataclass(slots=True, frozen=True)
class Side:
    """One upstream: its name (the `upstream` label) and its base URL (never a label)."""

    name: str
    base: str  # the URL as configured, without a trailing slash


@dataclass(slots=True, frozen=True)
class CanaryConfig:
    """Everything `serve` was told about the canary (picklable, for --workers)."""

    url: str | None = None  # None: one upstream, no canary
    percent: float = 0.0
    upstream_name: str = BASELINE
    canary_name: str = CANARY
    sticky_header: str | None = None
    side_header: str | None = None  # --canary-side-header: lets a client pick a side (probes)
    percent_file: str | None = None
    guard: bool = False
    guard_window: int = 200
    guard_margin: float = 5.0
    guard_min_streams: int = 20
    guard_ttft_ratio: float = 2.0
    guard_ttft_floor: float = 0.25


def label_name(value: str) -> str:
    """A side's name: it becomes a label value, so a short token of safe characters."""
    if not _NAME.fullmatch(value):
        raise ValueError(f"expected a name of letters, digits, '.', '_', '-' (at most 40), got {value!r}")
    return value


def parse_percent(text: str) -> float:
    """A share in percent, 0 to 100, decimals allowed (`12.5`, `12.5%`).

    Only ASCII digits and one `.`: `float()` alone would also take `1_0`, `1e1` and other
    scripts' digits, none of which an operator means as a share.
    """
    number = text.strip().removesuffix("%").strip()
    if not _PERCENT.fullmatch(number) or not 0.0 <= (value := float(number)) <= 100.0:
        raise ValueError(f"expected a percent from 0 to 100, got {_quote(text.strip())}")
    return value


def _quote(text: str) -> str:
    """A value for an error message: a file's bytes can be anything and any size."""
    return repr(text) if len(text) <= 40 else f"{text[:40]!r}... ({len(text)} characters)"


def bucket(value: str) -> float:
    """Where a sticky header value falls in [0, 100): the same everywhere, always."""
    digest = hashlib.blake2b(value.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / _HASH_SPAN * 100.0


class Router:
    """Picks a side per request. `percent` is the configured share; `tripped` (set by the
    guard) sends everything to the baseline until the operator says otherwise."""

    def __init__(
        self,
        baseline: Side,
        canary: Side | None = None,
        percent: float = 0.0,
        sticky_header: str | None = None,
        side_header: str | None = None,
    ) -> None:
        self.baseline = baseline
        self.canary = canary
        self.sticky_header = sticky_header
        self.side_header = side_header
        self._configured = percent
        self.tripped = False
        self.closed = False  # the percent file's content could not be read as a percent
        self._share = percent if canary is not None else 0.0  # what pick() reads
        self._random = random.random

    @classmethod
    def single(cls, base: str, name: str = BASELINE) -> Router:
        return cls(Side(name, base.rstrip("/")))

    @property
    def percent(self) -> float:
        """The share the canary gets now (0 while tripped, closed or without a canary)."""
        return self._share

    @property
    def configured_percent(self) -> float:
        return self._configured

    def set_percent(self, percent: float) -> None:
        """The operator's share (flag, file, SIGHUP); clears a trip."""
        self._configured = percent
        self.tripped = self.closed = False
        self._update()

    def trip(self) -> None:
        self.tripped = True
        self._update()

    def close(self, closed: bool = True) -> None:
        """The operator's word could not be read: the canary gets nothing until it can (a
        trip stays a trip either way)."""
        self.closed = closed
        self._update()

    def _update(self) -> None:
        self._share = 0.0 if self.canary is None or self.tripped or self.closed else self._configured

    def pick(self, headers: Mapping[str, str]) -> Side:
        canary = self.canary
        if canary is None:
            return self.baseline
        if self.side_header is not None:
            forced = headers.get(self.side_header)
            if forced == canary.name:
                return canary
            if forced == self.baseline.name:
                return self.baseline
        share = self._share
        if share <= 0.0:
            return self.baseline
        if share >= 100.0:
            return canary
        key = headers.get(self.sticky_header) if self.sticky_header is not None else None
        draw = bucket(key) if key is not None else self._random() * 100.0
        return canary if draw < share else self.baseline
