"""--workers: the merged exposition survives a worker's metrics file caught while still empty."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from prometheus_client import CollectorRegistry
from prometheus_client.mmap_dict import MmapedDict, mmap_key
from prometheus_client.multiprocess import MultiProcessCollector

from sse_audit_proxy.server.admin import _render


def test_a_metrics_file_caught_empty_is_read_again(tmp_path: Path) -> None:
    # A worker creates its file, then sizes it: a scrape in between read an empty file and
    # answered 500 (struct.error in prometheus-client's merge).
    empty = tmp_path / "counter_123.db"
    empty.touch()
    key = mmap_key("sse_audit_requests_total", "sse_audit_requests_total", ["route"], ["chat"], "Every.")

    def fill() -> None:
        filled = tmp_path / "filling.tmp"
        values = MmapedDict(str(filled))
        values.write_value(key, 7.0, 0.0)
        values.close()
        os.replace(filled, empty)

    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(tmp_path))
    timer = threading.Timer(0.01, fill)
    timer.start()
    try:
        text = _render(registry).decode()
    finally:
        timer.join()
    assert 'sse_audit_requests_total{route="chat"} 7.0' in text
