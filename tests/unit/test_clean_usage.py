"""clean_usage checks exact int and float first: it keeps what the isinstance definition
keeps, for any value (bools, int and float subclasses, nesting, odd keys, the bounds)."""

from __future__ import annotations

import re
from enum import IntEnum
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from sse_audit_proxy.core.dialects.base import clean_usage, held_usage


def reference_clean_usage(usage: Any, depth: int = 4, left: list[int] | None = None) -> dict[str, Any] | None:
    """The definition: numbers (integers of at most 64 bits, signed or not) and objects of
    numbers under keys that are protocol words, at most 4 levels, 32 fields an object, 64
    numbers in all, in the object's order."""
    if not isinstance(usage, dict):
        return None
    left = [64] if left is None else left
    out: dict[str, Any] = {}
    for key, value in usage.items():
        if not isinstance(key, str) or len(key) > 64 or not re.fullmatch(r"[A-Za-z0-9_.:/-]+", key):
            continue
        runs = re.split(r"[_.:/-]", key)  # a key or a token's shape: not a field name
        if any(len(r) >= 32 or (len(r) >= 16 and re.search(r"[0-9]", r)) for r in runs):
            continue
        if re.search(r"[0-9a-fA-F]{8}(-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}", key):  # a UUID
            continue
        counts = [sum(test(c) for c in key) for test in (str.isdigit, str.isupper, str.islower)]
        if len(key) >= 20 and counts[0] >= 3 and min(counts[1:]) >= 2:  # a random token's mix
            continue
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if isinstance(value, int) and not -(2**63) <= value < 2**64:
                continue
            if left[0] == 0:
                break
            left[0] -= 1
            out[key] = value
        elif isinstance(value, dict) and depth > 1:
            nested = reference_clean_usage(value, depth - 1, left)
            if nested:
                out[key] = nested
        if len(out) >= 32:
            break
    return out


class _Count(IntEnum):
    ONE = 1


class _Fraction(float):
    pass


_LEAVES = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.sampled_from([-(2**63) - 1, -(2**63), 2**64 - 1, 2**64])
    | st.floats()
    | st.text(max_size=3)
    | st.just(_Count.ONE)
    | st.builds(_Fraction, st.floats(allow_nan=False))
)
_KEYS = (
    st.text(max_size=4)
    | st.sampled_from(
        [
            "k" * 65,
            "k" * 64,
            "k" * 31,
            "a b",
            "x-y",
            "reasoning_tokens",
            "sk-proj-usage0123456789abcdef",  # a credential as a key: never logged
            "sk-lf-0f8fad5b-d9cb-469f-a165-70867728950e",
            "gsk_aB3dE5fG7hJ9kL1_mN2pQ4rS6tU8vW0",
            "cachedContentTokenCount",
            "k" * 15 + "1",
            "k" * 14 + "1",
        ]
    )
    | st.integers(0, 3)
)
_USAGE = st.recursive(
    _LEAVES, lambda inner: st.dictionaries(_KEYS, inner, max_size=40) | st.lists(inner, max_size=2)
)


@settings(max_examples=400, deadline=None)
@given(_USAGE)
def test_clean_usage_keeps_what_the_definition_keeps(usage: Any) -> None:
    got, want = clean_usage(usage), reference_clean_usage(usage)
    assert repr(got) == repr(want)  # repr: the same types too (an IntEnum is not an int)


@settings(max_examples=400, deadline=None)
@given(_USAGE)
def test_what_a_dialect_holds_of_a_usage_cleans_as_the_usage_does(usage: Any) -> None:
    """held_usage keeps a small object of whole numbers as it came and cleans anything else at
    once: the summary's reading of what was held is the reading of the usage itself."""
    held = held_usage(usage)
    assert repr(clean_usage(held)) == repr(clean_usage(usage))
    if held is usage and usage is not None:
        assert isinstance(usage, dict) and all(type(v) is int for v in usage.values())


def _depth(usage: dict[str, Any]) -> int:
    return 1 + max((_depth(v) for v in usage.values() if isinstance(v, dict)), default=0)


def _numbers(usage: dict[str, Any]) -> int:
    return sum(_numbers(v) if isinstance(v, dict) else 1 for v in usage.values())


def test_a_deep_usage_is_cut_to_four_levels_and_renders() -> None:
    usage: dict[str, Any] = {"total_tokens": 2}
    inner = usage
    for _ in range(400):  # orjson refuses to write more than 255 levels
        inner["n"] = {"x": 1}
        inner = inner["n"]
    got = clean_usage(usage)
    assert got is not None and _depth(got) == 4 and got["total_tokens"] == 2
    orjson.dumps(got)


def test_a_wide_usage_keeps_sixty_four_numbers_at_most() -> None:
    usage = {"total_tokens": 2, **{f"k{i}": {f"n{j}": j for j in range(20)} for i in range(5000)}}
    got = clean_usage(usage)
    assert got is not None and got["total_tokens"] == 2
    assert _numbers(got) == 64 and len(got) <= 32
