"""A stream's timeline: when each frame arrived and what kind it was, in bounded memory.

Pure, like the audit that feeds it. Frames decoded from one upstream read share that read's
arrival time, so the timeline is kept per read: one offset (float32 seconds from the request)
per read, and one byte of kind bits (the dialect's `observe()` bits) per
frame (its top bit marks the first frame of a read). That is exact for the first
`EXACT_FRAMES` frames. After that, reads are gathered into
groups of at least `stride` frames (first and last arrival, frame count, the union of their
kinds); when `MAX_GROUPS` groups are held, neighbours are merged pairwise and `stride`
doubles. So a 100,000-frame stream costs what a 2,000-frame one does, a terminal or an error
frame is never dropped (its bit stays in its group), and every silence stays visible: between
two groups, or as the longest silence each group keeps.

No text is kept: only kinds, counts and times.
"""

from __future__ import annotations

import struct
from array import array
from typing import Any

from sse_audit_proxy.core.dialects import CONTENT, ERROR, FINISH, KEEPALIVE, MALFORMED, TERMINAL, USAGE

# Chosen from the memory per open stream (README, "Evidence for incidents"): the exact part
# costs at most 5 bytes a frame (1 kind byte, plus 4 bytes per read), the grouped part 17 bytes
# a group, so a stream of any length holds at most ~3.4 KiB of timeline; the `memory` workload's streams
# (24 frames) hold ~0.5 KiB.
EXACT_FRAMES = 256
MAX_GROUPS = 128

# The kinds a frame can be, as named in the timeline; a frame may be several (content+finish).
KIND_NAMES: tuple[tuple[int, str], ...] = (
    (CONTENT, "content"),
    (KEEPALIVE, "keepalive"),
    (FINISH, "finish"),
    (USAGE, "usage"),
    (ERROR, "error"),
    (TERMINAL, "terminal"),
    (MALFORMED, "malformed"),
)
_BIT_OF = {name: bit for bit, name in KIND_NAMES}
OTHER = "other"  # a frame with none of the bits: a role chunk, `message_start`, ...
READ_START = 0x80  # not a kind: marks a read's first frame in the exact part (bits < 0x80)
_NAMES: dict[int, str] = {}
_EMPTY_F: array[float] = array("f")  # shared placeholders, never appended to
_EMPTY_I: array[int] = array("I")
_EMPTY_B = bytearray()
_AS_READ_START = bytes(b | READ_START for b in range(READ_START)) + bytes(range(READ_START, 256))


def _float32s(values: list[float]) -> bytes:
    """`values` as an array("f") holds them. array.extend parses each item as a call argument;
    struct converts them in one call, to the same floats (3x cheaper per item, measured)."""
    try:
        return struct.pack(f"{len(values)}f", *values)
    except OverflowError:  # beyond float32's range: struct refuses, an array stores inf
        return array("f", values).tobytes()


def kind_name(bits: int) -> str:
    """`content`, `content+finish`, ... (`other` for none); cached: there are few bit sets."""
    name = _NAMES.get(bits)
    if name is None:
        name = "+".join(n for bit, n in KIND_NAMES if bits & bit) or OTHER
        _NAMES[bits] = name
    return name


def kind_bits(name: str) -> int:
    """The inverse of `kind_name` (unknown parts are ignored)."""
    bits = 0
    for part in name.split("+"):
        bits |= _BIT_OF.get(part, 0)
    return bits


class Timeline:
    __slots__ = ("_g_first", "_g_gap", "_g_kinds", "_g_last", "_g_n", "_kinds", "_r_t", "_stride", "frames")

    def __init__(self) -> None:
        self.frames = 0
        # Per frame of the exact part: its kind bits, with READ_START on a read's first frame.
        self._kinds = bytearray()
        self._r_t = array("f")  # per read of the exact part: offset (s)
        # The grouped part, allocated when reached (most streams never do).
        self._g_first: array[float] | None = None
        self._g_last: array[float] = _EMPTY_F
        self._g_gap: array[float] = _EMPTY_F  # the longest silence inside each group
        self._g_n: array[int] = _EMPTY_I
        self._g_kinds = _EMPTY_B
        self._stride = 1

    def add(self, offset: float, kinds: bytes | bytearray) -> None:
        """One read's frames (their kind bits, in order), `offset` seconds after the request."""
        n = len(kinds)
        if not n:
            return
        if self.frames + n <= EXACT_FRAMES:
            self._kinds += kinds
            self._kinds[self.frames] |= READ_START
            self.frames += n
            self._r_t.append(offset)
            return
        mask = 0
        for bits in kinds:
            mask |= bits
        self._group(offset, n, mask)

    def add_ones(self, offsets: list[float], kinds: bytes | bytearray) -> None:
        """Several reads of one frame each: `kinds[i]` arrived `offsets[i]` seconds after the
        request (the audit accounts one-frame reads in batches)."""
        n = len(kinds)
        if self.frames + n <= EXACT_FRAMES:
            self._kinds += kinds.translate(_AS_READ_START)
            self._r_t.frombytes(_float32s(offsets))
            self.frames += n
            return
        for offset, bits in zip(offsets, kinds, strict=True):
            self.add_one(offset, bits)

    def add_one(self, offset: float, bits: int) -> None:
        """`add` for a read of one frame (most reads)."""
        if self.frames < EXACT_FRAMES:
            self._kinds.append(bits | READ_START)
            self._r_t.append(offset)
            self.frames += 1
        else:
            self._group(offset, 1, bits)

    def _group(self, offset: float, n: int, mask: int) -> None:
        self.frames += n
        first: array[float] | None = self._g_first
        if first is None:
            first = self._g_first = array("f")
            self._g_last, self._g_gap, self._g_n = array("f"), array("f"), array("I")
            self._g_kinds = bytearray()
        elif self._g_n[-1] < self._stride:  # the open group has room
            gap = offset - self._g_last[-1]
            if gap > self._g_gap[-1]:
                self._g_gap[-1] = gap
            self._g_last[-1] = offset
            self._g_n[-1] += n
            self._g_kinds[-1] |= mask
            return
        if len(first) >= MAX_GROUPS:
            first = self._halve()
        first.append(offset)
        self._g_last.append(offset)
        self._g_gap.append(0.0)
        self._g_n.append(n)
        self._g_kinds.append(mask)

    def _halve(self) -> array[float]:
        """Merge neighbouring groups pairwise and double the stride: memory stays bounded."""
        assert self._g_first is not None
        first, last, n, kinds = self._g_first, self._g_last, self._g_n, self._g_kinds
        gap, end = self._g_gap, len(first) - 1
        self._g_first = array("f", first[0::2])
        self._g_last = array("f", (last[min(i + 1, end)] for i in range(0, len(last), 2)))
        self._g_gap = array(
            "f",
            (
                max(gap[i], gap[i + 1], first[i + 1] - last[i]) if i < end else gap[i]
                for i in range(0, len(gap), 2)
            ),
        )
        self._g_n = array("I", (sum(n[i : i + 2]) for i in range(0, len(n), 2)))
        self._g_kinds = bytearray(
            kinds[i] | (kinds[i + 1] if i + 1 < len(kinds) else 0) for i in range(0, len(kinds), 2)
        )
        self._stride *= 2
        return self._g_first

    def rows(self) -> list[list[Any]]:
        """The timeline as JSON rows, in arrival order: `[t_ms, kind]` per frame of the exact
        part, then `[t_ms, kinds, count, last_t_ms, longest_silence_ms]` per group."""
        out: list[list[Any]] = []
        offsets = iter(self._r_t)
        ms = 0.0
        for bits in self._kinds:
            if bits & READ_START:
                ms = round(next(offsets) * 1000.0, 3)
            out.append([ms, kind_name(bits & ~READ_START)])
        if self._g_first is not None:
            for first, last, n, bits, gap in zip(
                self._g_first, self._g_last, self._g_n, self._g_kinds, self._g_gap, strict=True
            ):
                out.append(
                    [
                        round(first * 1000.0, 3),
                        kind_name(bits),
                        n,
                        round(last * 1000.0, 3),
                        round(gap * 1000.0, 3),
                    ]
                )
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "frames": self.frames,
            "exact_frames": min(self.frames, EXACT_FRAMES),
            "stride": self._stride if self._g_first is not None else 1,
            "rows": self.rows(),
        }

    def nbytes(self) -> int:
        """The buffers' payload (for the memory figures in the README and a test)."""
        size = len(self._kinds) + 4 * len(self._r_t)
        if self._g_first is not None:
            size += 17 * len(self._g_first)
        return size
