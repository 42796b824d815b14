"""The shipped Prometheus rules: valid, unit-tested with promtool, every alert covered both ways."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

PROM = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"
RULES = PROM / "sse-audit-proxy.rules.yml"
TESTS = PROM / "sse-audit-proxy.rules.test.yml"
needs_promtool = pytest.mark.skipif(
    shutil.which("promtool") is None, reason="promtool missing: .ci/run installs Debian's prometheus package"
)


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["promtool", *args], capture_output=True, text=True, timeout=120, cwd=PROM, check=False
    )


@needs_promtool
def test_rules_pass_promtool_check() -> None:
    proc = promtool("check", "rules", RULES.name)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@needs_promtool
def test_rules_pass_their_promtool_unit_tests() -> None:
    proc = promtool("test", "rules", TESTS.name)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout + proc.stderr


def alerts() -> list[dict]:
    doc = yaml.safe_load(RULES.read_text())
    return [r for g in doc["groups"] for r in g["rules"] if "alert" in r]


def test_every_alert_is_unit_tested_firing_and_silent() -> None:
    cases = [c for t in yaml.safe_load(TESTS.read_text())["tests"] for c in t.get("alert_rule_test", ())]
    for rule in alerts():
        mine = [c for c in cases if c["alertname"] == rule["alert"]]
        assert any(c["exp_alerts"] for c in mine), f"{rule['alert']} never shown firing"
        assert any(not c["exp_alerts"] for c in mine), f"{rule['alert']} never shown silent"


def test_every_alert_has_a_severity_and_runbook_annotations() -> None:
    for rule in alerts():
        assert rule["labels"]["severity"] in ("critical", "warning"), rule["alert"]
        assert {"summary", "description", "runbook"} <= set(rule["annotations"]), rule["alert"]
        assert rule["alert"].startswith("SSEAudit")


def test_every_alert_has_a_row_in_the_docs_runbook_table() -> None:
    section = (PROM.parent.parent / "docs/operate/alerts.md").read_text()
    assert section.startswith("# Alerts: what each means, what to do\n")
    for rule in alerts():
        assert f"| `{rule['alert']}` |" in section, rule["alert"]
