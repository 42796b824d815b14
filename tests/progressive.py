"""The Argo Rollouts and Flagger templates in deploy/kubernetes/progressive-delivery, their CRD
schemas (tests/data/crds, Apache-2.0, see the LICENSE files there) and their PromQL as
Argo and Flagger would send it."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
DIR = ROOT / "deploy" / "kubernetes" / "progressive-delivery"
ARGO = DIR / "argo-rollouts-analysistemplate.yaml"
FLAGGER = DIR / "flagger-metrictemplates.yaml"
CRDS = Path(__file__).parent / "data" / "crds"


def documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def crd(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((CRDS / name).read_text())
    return data


def strict(schema: Any) -> Any:
    """The CRD schema as `kubectl apply --validate=strict` reads it: unknown fields are errors."""
    if isinstance(schema, dict):
        out = {k: strict(v) for k, v in schema.items()}
        if (
            "properties" in out
            and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [strict(v) for v in schema]
    return schema


def argo_queries(interval: str = "5m") -> dict[str, str]:
    """Each metric's query with the template's default args filled in, as Argo would."""
    [template] = documents(ARGO)
    args = {a["name"]: a["value"] for a in template["spec"]["args"]}

    def fill(text: str) -> str:
        return re.sub(r"\{\{args\.([\w-]+)\}\}", lambda m: args[m.group(1)], text)

    return {
        m["name"]: fill(m["provider"]["prometheus"]["query"]).replace("[5m]", f"[{interval}]")
        for m in template["spec"]["metrics"]
    }


def flagger_queries(interval: str = "5m") -> dict[str, str]:
    """Each template's query with {{ interval }} filled in, as Flagger would."""
    return {
        d["metadata"]["name"]: re.sub(r"\{\{\s*interval\s*\}\}", interval, d["spec"]["query"])
        for d in documents(FLAGGER)
    }


def argo_metrics() -> dict[str, dict[str, Any]]:
    [template] = documents(ARGO)
    return {m["name"]: m for m in template["spec"]["metrics"]}


def argo_measurement(metric: dict[str, Any], result: list[float]) -> str:
    """The phase Argo Rollouts gives one measurement (utils/evaluate.EvaluateResult): both
    conditions evaluated (an error in either: Error), then Failed, Inconclusive when neither
    holds and both are set, else Successful. The conditions here use only `len`, `result[i]`,
    comparisons, `&&` and `||`, which read the same in Python."""

    def holds(condition: str) -> bool:
        expr = condition.replace("&&", " and ").replace("||", " or ")
        return bool(eval(expr, {"__builtins__": {}}, {"len": len, "result": result}))

    success, failure = metric.get("successCondition"), metric.get("failureCondition")
    try:
        ok = holds(success) if success else None
        bad = holds(failure) if failure else None
    except (IndexError, TypeError):
        return "Error"
    if bad is None:
        bad = not ok
    if ok is None:
        ok = not bad
    if bad:
        return "Failed"
    return "Successful" if ok else "Inconclusive"


def side_series(side: str, judged: str, bad: str, ttft: dict[str, str], job: str) -> list[dict[str, str]]:
    """One side's counters in promtool's notation: judged and bad streams, TTFT buckets by `le`."""
    labels = f'job="{job}", upstream="{side}"'
    out = [
        {"series": f"sse_audit_judged_streams_total{{{labels}}}", "values": judged},
        {"series": f"sse_audit_bad_streams_total{{{labels}}}", "values": bad},
    ]
    for le, values in ttft.items():
        out.append(
            {
                "series": f'sse_audit_time_to_first_token_seconds_bucket{{{labels}, le="{le}"}}',
                "values": values,
            }
        )
    return out


def promtool_queries(
    tmp: Path, series: list[dict[str, str]], expected: dict[str, tuple[str, list[dict[str, Any]]]]
) -> None:
    """Each (query, samples) of `expected` evaluated at 10 minutes over 1-minute `series`, as
    promtool's unit tests do (the same PromQL engine as Prometheus)."""
    test = {
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": series,
                "promql_expr_test": [
                    {"expr": query, "eval_time": "10m", "exp_samples": samples}
                    for query, samples in expected.values()
                ],
            }
        ],
    }
    path = tmp / "queries_test.yml"
    path.write_text(yaml.safe_dump(test))
    proc = subprocess.run(
        ["promtool", "test", "rules", path.name],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
