"""Argo Rollouts AnalysisTemplate and Flagger MetricTemplates: valid against their CRDs (strict),
their PromQL parses, and they compare sides by the `upstream` label. (The e2e test runs them
against a real Prometheus scraping a canary.)"""

from __future__ import annotations

import re

import jsonschema
import pytest
from progressive import ARGO, FLAGGER, argo_queries, crd, documents, flagger_queries, strict


@pytest.mark.parametrize(
    "path,schema_file",
    [
        (ARGO, "argo-rollouts-analysistemplate.json"),
        (FLAGGER, "flagger-metrictemplate.json"),
    ],
)
def test_templates_are_valid_against_their_crd_schemas(path, schema_file) -> None:
    schema = crd(schema_file)
    docs = documents(path)
    assert docs
    for doc in docs:
        assert doc["apiVersion"] == f"{schema['group']}/{schema['version']}"
        assert doc["kind"] == schema["kind"]
        jsonschema.validate(doc, strict(schema["openAPIV3Schema"]))


def test_strict_validation_catches_a_misspelt_field() -> None:
    schema = strict(crd("argo-rollouts-analysistemplate.json")["openAPIV3Schema"])
    [doc] = documents(ARGO)
    doc["spec"]["metrics"][0]["sucessCondition"] = doc["spec"]["metrics"][0].pop("successCondition")
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(doc, schema)


def test_every_argo_arg_used_is_declared_and_conditions_read_one_value() -> None:
    [template] = documents(ARGO)
    for metric in template["spec"]["metrics"]:
        assert metric["successCondition"].startswith("result[0] <=")
    queries = argo_queries()
    assert set(queries) == {"bad-stream-share-excess", "ttft-p95-ratio"}
    for query in queries.values():
        assert "{{" not in query
        assert 'upstream="canary"' in query and 'upstream="baseline"' in query


def test_flagger_templates_compare_the_sides() -> None:
    queries = flagger_queries("1m")
    assert set(queries) == {"sse-audit-bad-stream-share-excess", "sse-audit-ttft-p95-ratio"}
    for query in queries.values():
        assert "{{" not in query and "[1m]" in query
        assert 'upstream="canary"' in query and 'upstream="baseline"' in query


def test_every_selector_is_narrowed_to_the_proxys_job() -> None:
    """One Prometheus often scrapes staging and production proxies: a selector without `job`
    compares their streams together (a clean canary next to a faulty baseline elsewhere)."""
    for query in {**argo_queries(), **flagger_queries("1m")}.values():
        selectors = re.findall(r"sse_audit_\w+\{([^}]*)\}", query)
        assert len(selectors) >= 2
        for matchers in selectors:
            assert re.search(r'job=~"\.\*sse-audit-proxy\.\*"', matchers), matchers
