"""The Argo Rollouts and Flagger templates in deploy/kubernetes/progressive-delivery, their CRD
schemas (tests/data/crds, Apache-2.0, see the LICENSE files there) and their PromQL as
Argo and Flagger would send it."""

from __future__ import annotations

import json
import re
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
