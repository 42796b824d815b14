"""clean_usage checks exact int and float first: it keeps what the isinstance definition
keeps, for any value (bools, int and float subclasses, nesting, odd keys, the 32 bound)."""

from __future__ import annotations

from enum import IntEnum
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from sse_audit_proxy.core.dialects.base import clean_usage


def reference_clean_usage(usage: Any) -> dict[str, Any] | None:
    """The definition (as base.py had it before)."""
    if not isinstance(usage, dict):
        return None
    out: dict[str, Any] = {}
    for key, value in usage.items():
        if not isinstance(key, str) or len(key) > 64:
            continue
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[key] = value
        elif isinstance(value, dict):
            nested = reference_clean_usage(value)
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
    | st.floats()
    | st.text(max_size=3)
    | st.just(_Count.ONE)
    | st.builds(_Fraction, st.floats(allow_nan=False))
)
_KEYS = st.text(max_size=4) | st.just("k" * 65) | st.integers(0, 3)
_USAGE = st.recursive(
    _LEAVES, lambda inner: st.dictionaries(_KEYS, inner, max_size=40) | st.lists(inner, max_size=2)
)


@settings(max_examples=400, deadline=None)
@given(_USAGE)
def test_clean_usage_keeps_what_the_definition_keeps(usage: Any) -> None:
    got, want = clean_usage(usage), reference_clean_usage(usage)
    assert repr(got) == repr(want)  # repr: the same types too (an IntEnum is not an int)
