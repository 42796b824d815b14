"""--workers: a worker's label caps start from the labels already in the multiprocess files."""

from __future__ import annotations

from pathlib import Path

from sse_audit_proxy.sinks.metrics import labels_in


def test_no_directory_and_an_empty_one_seed_nothing(tmp_path: Path) -> None:
    assert labels_in(None, ("model",)) == {"model": set()}
    assert labels_in(str(tmp_path), ("model", "status")) == {"model": set(), "status": set()}


def test_a_file_a_killed_worker_left_half_made_does_not_stop_a_worker_starting(tmp_path: Path) -> None:
    """A file created and not yet sized (a worker killed in between) made the replacement
    raise at start, and the pool never refilled (second review)."""
    (tmp_path / "counter_99999.db").write_bytes(b"")
    (tmp_path / "histogram_99998.db").write_bytes(b"\x00\x01\x02")
    assert labels_in(str(tmp_path), ("model",)) == {"model": set()}
