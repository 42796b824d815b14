"""The Argo Rollouts and Flagger queries when the canary had no streams in the window.

Its series are still there (a share of 0, or a tripped guard, leaves them at their last count),
so the rates are 0 and the ratios were NaN: Argo read `NaN <= 0.05` as a failed measurement,
where the templates promise that the rollout waits. The queries now return nothing then (an
Inconclusive measurement for Argo), and a value once both sides have 10 streams in the window.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from progressive import argo_queries, flagger_queries

pytestmark = pytest.mark.skipif(
    shutil.which("promtool") is None, reason="promtool missing: .ci/run installs Debian's prometheus package"
)

JOB = "monitoring/sse-audit-proxy"


def series(side: str, streams: str, bad: str = "0x10") -> list[dict[str, str]]:
    """Counters of one side over 10 minutes of 1-minute samples (`streams`: promtool's notation)."""
    labels = f'job="{JOB}", upstream="{side}"'
    out = [
        {"series": f"sse_audit_judged_streams_total{{{labels}}}", "values": streams},
        {"series": f"sse_audit_bad_streams_total{{{labels}}}", "values": bad},
    ]
    for le in ("0.5", "1", "+Inf"):
        bucket = f'sse_audit_time_to_first_token_seconds_bucket{{{labels}, le="{le}"}}'
        out.append({"series": bucket, "values": streams})
    return out


def run_promtool(
    tmp_path: Path,
    canary_streams: str,
    expected: dict[str, list[dict[str, float]]],
    *,
    canary_bad: str = "0x10",
    baseline_streams: str = "0+10x10",
) -> None:
    """Each query at 10 minutes against the series, as promtool's unit tests evaluate it."""
    queries = {**argo_queries("5m"), **flagger_queries("5m")}
    assert set(expected) == set(queries)
    test = {
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": series("baseline", baseline_streams)
                + series("canary", canary_streams, canary_bad),
                "promql_expr_test": [
                    {"expr": query, "eval_time": "10m", "exp_samples": expected[name]}
                    for name, query in queries.items()
                ],
            }
        ],
    }
    path = tmp_path / "queries_test.yml"
    path.write_text(yaml.safe_dump(test))
    proc = subprocess.run(
        ["promtool", "test", "rules", path.name], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


NAMES = sorted({**argo_queries("5m"), **flagger_queries("5m")})


def test_no_canary_streams_in_the_window_gives_no_result_not_nan(tmp_path: Path) -> None:
    run_promtool(tmp_path, "100x10", {name: [] for name in NAMES})  # series there, rate 0


def test_canary_streams_give_a_value(tmp_path: Path) -> None:
    # Both sides alike, no bad streams: an excess of 0 (points), a p95 ratio of 1.
    run_promtool(tmp_path, "0+10x10", {n: [{"value": 1.0 if "ttft" in n else 0.0}] for n in NAMES})


def test_a_canary_with_too_few_baseline_streams_to_compare_gives_no_value(tmp_path: Path) -> None:
    """At a share near 100 % the baseline had fewer than 10 streams an interval, and the Flagger
    templates returned a pass (0 points, a ratio of 1) for a canary that buffered every stream
    (an outside review). Nothing now (Flagger: a failed check); Argo: Inconclusive (nothing)."""
    run_promtool(tmp_path, "0+10x10", {n: [] for n in NAMES}, canary_bad="0+10x10", baseline_streams="0+1x10")


def test_a_canary_with_too_few_streams_of_its_own_passes_flagger_unjudged(tmp_path: Path) -> None:
    expected = {
        n: ([] if not n.startswith("sse-audit-") else [{"value": 1.0 if "ttft" in n else 0.0}]) for n in NAMES
    }
    run_promtool(tmp_path, "0+1x10", expected, canary_bad="0+1x10")
