"""Medians over repeats, the paired differences (through a proxy minus direct), the headline
(issue 16's figures, one row per target) and the detailed table."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

from sse_audit_proxy.tools.bench.harness import Target, median_of
from sse_audit_proxy.tools.bench.workloads import LATENCY, MEMORY, THROUGHPUT

DIRECT = "direct"

# (workload, row label, field); fields starting with "added_"/"vs_"/"scaling" are derived.
ROWS: tuple[tuple[str, str, str], ...] = (
    (LATENCY, "frame latency p50 (ms)", "latency_p50_ms"),
    (LATENCY, "frame latency p99 (ms)", "latency_p99_ms"),
    (LATENCY, "added latency p50 (ms)", "added_latency_p50_ms"),
    (LATENCY, "added latency p99 (ms)", "added_latency_p99_ms"),
    (LATENCY, "TTFT p50 (ms)", "ttft_p50_ms"),
    (LATENCY, "added TTFT p50 (ms)", "added_ttft_p50_ms"),
    (LATENCY, "latency samples", "samples"),
    (LATENCY, "proxy CPU µs per frame", "cpu_us_per_frame"),
    (LATENCY, "frames per proxy read", "frames_per_chunk"),
    (THROUGHPUT, "frames/s", "frames_per_s"),
    (THROUGHPUT, "frames/s vs direct", "vs_direct"),
    (THROUGHPUT, "proxy CPU s per M frames", "cpu_s_per_million_frames"),
    (THROUGHPUT, "frames/s per proxy core", "frames_per_core_s"),
    (THROUGHPUT, "frames per proxy read", "frames_per_chunk"),
    (THROUGHPUT, "proxy cores busy", "target_cores"),
    (THROUGHPUT, "gateway + client cores busy", "harness_cores"),
    (THROUGHPUT, "bottleneck", "bottleneck"),
    (THROUGHPUT, "frames/s vs 1 worker", "scaling"),
    (MEMORY, "streams open at sample", "open_at_sample"),
    (MEMORY, "RSS per open stream (KiB, max)", "rss_per_stream_kib"),
    (MEMORY, "RSS at sample (MiB)", "rss_open_mib"),
)


def _paired(runs: Sequence[dict[str, Any]], direct: Sequence[dict[str, Any]], key: str) -> float | None:
    """Median over repeats of (this target's value - direct's value in the same repeat)."""
    diffs = [
        r[key] - d[key]
        for r, d in zip(runs, direct, strict=False)
        if isinstance(r.get(key), (int, float)) and isinstance(d.get(key), (int, float))
    ]
    return round(statistics.median(diffs), 4) if diffs else None


def _ratios(runs: Sequence[dict[str, Any]], base: Sequence[dict[str, Any]], key: str) -> list[float]:
    """This target's value over the base's in the same repeat, for each repeat both measured."""
    return [
        r[key] / b[key]
        for r, b in zip(runs, base, strict=False)
        if isinstance(r.get(key), (int, float)) and isinstance(b.get(key), (int, float)) and b[key]
    ]


def _ratio(runs: Sequence[dict[str, Any]], base: Sequence[dict[str, Any]], key: str) -> float | None:
    ratios = _ratios(runs, base, key)
    return round(statistics.median(ratios), 3) if ratios else None


def summarize(
    results: dict[str, dict[str, list[dict[str, Any]]]], targets: Sequence[Target]
) -> dict[str, dict[str, dict[str, Any]]]:
    """Per workload and target: the medians, plus the derived comparisons."""
    ours = [t for t in targets if t.kind == "proxy" and t.source is None]
    one_worker = next((t.name for t in ours if t.workers == 1), None)
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for workload, by_target in results.items():
        direct = by_target.get(DIRECT, [])
        out[workload] = {}
        for target in targets:
            runs = by_target.get(target.name)
            if not runs:
                continue
            median = median_of(runs)
            if workload == LATENCY and target.name != DIRECT and direct:
                for key in ("latency_p50_ms", "latency_p99_ms", "ttft_p50_ms"):
                    median[f"added_{key}"] = _paired(runs, direct, key)
            if workload == THROUGHPUT:
                if target.name != DIRECT and direct:
                    median["vs_direct"] = _ratio(runs, direct, "frames_per_s")
                if target in ours and target.workers > 1 and one_worker:
                    median["scaling"] = _ratio(runs, by_target.get(one_worker, []), "frames_per_s")
                median["harness_cores"] = round(
                    median.get("gateway_cores", 0) + median.get("client_cores", 0), 3
                )
            if workload == MEMORY:
                # The largest repeat: a process that already held as many streams before (an
                # --against proxy is not restarted) reuses that memory and shows ~0 after.
                per_stream = [
                    r["rss_per_stream_kib"]
                    for r in runs
                    if isinstance(r.get("rss_per_stream_kib"), int | float)
                ]
                median["rss_per_stream_kib"] = max(per_stream) if per_stream else None
                if isinstance(median.get("rss_open_bytes"), int | float):
                    median["rss_open_mib"] = round(median["rss_open_bytes"] / (1 << 20), 1)
            out[workload][target.name] = median
    return out


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def table(summary: dict[str, dict[str, dict[str, Any]]], targets: Sequence[Target]) -> str:
    names = [t.name for t in targets]
    rows = [["workload", "metric", *names]]
    for workload, label, key in ROWS:
        by_target = summary.get(workload)
        if not by_target:
            continue
        cells = [_cell(by_target.get(n, {}).get(key)) for n in names]
        if all(c == "-" for c in cells):
            continue
        rows.append([workload, label, *cells])
    return _layout(rows, left=2)


def _layout(rows: list[list[str]], left: int) -> str:
    """Columns padded to their widest cell: the first `left` flush left, numbers flush right."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for i, row in enumerate(rows):
        lines.append(
            "  ".join(
                c.ljust(w) if j < left else c.rjust(w)
                for j, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


# The headline: issue 16's figures, one column each. (JSON field, column, workload, summary
# field); "cpu_vs_reference" is derived.
HEADLINE: tuple[tuple[str, str, str, str], ...] = (
    # µs per frame and s per million frames are the same number.
    ("cpu_s_per_million_paced_frames", "CPU s / 1M paced frames", LATENCY, "cpu_us_per_frame"),
    ("cpu_vs_reference", "x {reference}", "", ""),
    ("rss_per_open_stream_kib", "memory / open stream (KiB)", MEMORY, "rss_per_stream_kib"),
    ("added_ttft_p50_ms", "added TTFT p50 (ms)", LATENCY, "added_ttft_p50_ms"),
    ("added_latency_p99_ms", "added p99 frame latency (ms)", LATENCY, "added_latency_p99_ms"),
    ("batched_frames_per_core_s", "batched frames/s per core", THROUGHPUT, "frames_per_core_s"),
)
NGINX = "nginx"
BASELINE = "baseline"


def reference(targets: Sequence[Target]) -> str | None:
    """What the `x` column divides by: nginx (started by the bench, or an --against named
    so) when it is in the run, else the baseline checkout, else nothing."""
    names = [t.name for t in targets]
    started = next((t.name for t in targets if t.kind == NGINX), None)
    return started or next((n for n in (NGINX, BASELINE) if n in names), None)


def _over(value: Any, base: Any) -> float | None:
    if isinstance(value, int | float) and isinstance(base, int | float) and base > 0:
        return round(value / base, 3)
    return None


def headline(summary: dict[str, dict[str, dict[str, Any]]], targets: Sequence[Target]) -> dict[str, Any]:
    """Per target, issue 16's figures from the summary's medians, and the ratios of CPU and
    memory to the reference target's (a ratio of the medians shown, so it can be checked)."""
    ref = reference(targets)
    rows: dict[str, dict[str, Any]] = {}
    for target in targets:
        row: dict[str, Any] = {}
        for field, _, workload, key in HEADLINE:
            if workload:
                row[field] = summary.get(workload, {}).get(target.name, {}).get(key)
        rows[target.name] = row
    for row in rows.values():
        base = rows.get(ref, {}) if ref else {}
        row["cpu_vs_reference"] = _over(
            row["cpu_s_per_million_paced_frames"], base.get("cpu_s_per_million_paced_frames")
        )
        row["rss_vs_reference"] = _over(row["rss_per_open_stream_kib"], base.get("rss_per_open_stream_kib"))
    return {"reference": ref, "targets": rows}


def cpu_ratios_by_repeat(
    results: dict[str, dict[str, list[dict[str, Any]]]], ref: str | None
) -> dict[str, list[float]]:
    """Per target, CPU per paced frame over the reference's in each repeat. The targets take
    turns within a repeat, so these pair runs made at nearly the same moment: their spread
    shows how much of the headline's ratio is the machine's noise."""
    by_target = results.get(LATENCY, {})
    base = by_target.get(ref, []) if ref else []
    out: dict[str, list[float]] = {}
    for name, runs in by_target.items():
        ratios = _ratios(runs, base, "cpu_us_per_frame")
        if ratios and name not in (ref, DIRECT):
            out[name] = [round(x, 2) for x in ratios]
    return out


def spread_lines(ratios: dict[str, list[float]], ref: str | None) -> list[str]:
    """One line per target with two or more repeats: its CPU ratio in each, low to high."""
    return [
        f"x {ref} per repeat (CPU per paced frame), {name}: "
        + ", ".join(f"{v:.2f}" for v in sorted(values))
        + f" (median {statistics.median(values):.2f})"
        for name, values in ratios.items()
        if len(values) > 1
    ]


def headline_table(head: dict[str, Any]) -> str:
    ref = head["reference"] or NGINX
    rows = [["target", *(label.format(reference=ref) for _, label, _, _ in HEADLINE)]]
    for name, row in head["targets"].items():
        rows.append([name, *(_cell(row.get(field)) for field, _, _, _ in HEADLINE)])
    return _layout(rows, left=1)
