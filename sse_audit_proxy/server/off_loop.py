"""Work the metrics port does beside the loop that relays streams, without stopping it.

Lookups and scrapes run in threads (lookup.py, admin.py), so that the loop gets the GIL back
every switch interval. What a thread cannot hand back is the cyclic garbage collector: the
objects a big answer is made of (10,000 records are 100,000 dicts and lists) set off full
collections over every object the process holds, the held records among them, and a full
collection stops every thread, the loop's too (0.2 s with 20,000 records held; an outside
review).
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def uncollected(work: Callable[[], T]) -> T:
    """`work()` with the collector off. What it makes is freed by reference counts once written
    out (it makes no cycles), so there is nothing for a collection to find; the collector's
    counts fall back as it is freed. Off already (someone meant it): left so."""
    if not gc.isenabled():
        return work()
    gc.disable()
    try:
        return work()
    finally:
        gc.enable()
