"""Deployment files, validated offline: Kubernetes manifests against the Kubernetes schemas
(kubernetes-validate bundles them), the compose file against the Compose Specification schema
(check-jsonschema bundles it), plus the cross-references a schema cannot see."""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from yarl import URL

from tests.cli_process import serve_env, serve_process

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "kubernetes"
COMPOSE = DEPLOY / "docker-compose.yml"
KUBERNETES_VERSIONS = ("1.27.0", "1.30.0", "1.33.0")
APP = {"app.kubernetes.io/name": "sse-audit-proxy"}


def built_manifests(where: Path = K8S) -> list[dict[str, Any]]:
    """What `kubectl apply -k` would apply: kustomize's output (kubectl embeds kustomize)."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl (with its embedded kustomize) is not installed")
    out = subprocess.run(
        [kubectl, "kustomize", str(where)], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def by_kind(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {d["kind"]: d for d in docs}


@pytest.fixture(scope="module")
def manifests() -> dict[str, dict[str, Any]]:
    return by_kind(built_manifests())


def test_kustomization_builds_every_kind_an_operator_expects(manifests) -> None:
    assert set(manifests) == {
        "ConfigMap",
        "Deployment",
        "Service",
        "PodMonitor",
        "PrometheusRule",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
    }


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_builtin_manifests_are_valid_against_the_kubernetes_schemas(manifests, version) -> None:
    for doc in manifests.values():
        if doc["apiVersion"].startswith("monitoring.coreos.com/"):
            continue  # custom resources: checked below against the proxy and the rules
        kubernetes_validate.validate(doc, version, strict=True)


def test_the_schema_validation_rejects_a_misspelt_field(manifests) -> None:
    broken = yaml.safe_load(yaml.safe_dump(manifests["Deployment"]))
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGett"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[-1], strict=True)


def container(manifests) -> dict[str, Any]:
    [proxy] = manifests["Deployment"]["spec"]["template"]["spec"]["containers"]
    return proxy


def test_probes_hit_readyz_and_healthz_on_the_metrics_port(manifests) -> None:
    proxy = container(manifests)
    ports = {p["name"]: p["containerPort"] for p in proxy["ports"]}
    assert ports == {"http": 8080, "metrics": 9464}
    assert proxy["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert proxy["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    env = {e["name"]: e["value"] for e in proxy["env"]}
    assert env["SSE_AUDIT_HOST"] == env["SSE_AUDIT_METRICS_HOST"] == "0.0.0.0"


def test_termination_grace_covers_the_prestop_pause_and_the_drain_timeout(manifests) -> None:
    pod = manifests["Deployment"]["spec"]["template"]["spec"]
    command = container(manifests)["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    drain = float(manifests["ConfigMap"]["data"]["SSE_AUDIT_DRAIN_TIMEOUT"])
    assert pod["terminationGracePeriodSeconds"] >= float(command[1]) + drain + 5


def test_the_pod_runs_as_non_root_with_a_read_only_root(manifests) -> None:
    pod = manifests["Deployment"]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    sc = container(manifests)["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert {"name": "tmp", "mountPath": "/tmp"} in container(manifests)["volumeMounts"]


def test_every_selector_and_reference_points_at_the_proxy(manifests) -> None:
    deployment = manifests["Deployment"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert APP.items() <= pod_labels.items()
    assert deployment["spec"]["selector"]["matchLabels"] == APP
    assert manifests["Service"]["spec"]["selector"] == APP
    assert manifests["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"] == APP
    assert manifests["PodMonitor"]["spec"]["selector"]["matchLabels"] == APP
    assert {p["targetPort"] for p in manifests["Service"]["spec"]["ports"]} == {"http", "metrics"}
    [endpoint] = manifests["PodMonitor"]["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] == "metrics" and endpoint["path"] == "/metrics"
    target = manifests["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    config = manifests["ConfigMap"]["metadata"]["name"]
    assert container(manifests)["envFrom"] == [{"configMapRef": {"name": config}}]
    assert manifests["HorizontalPodAutoscaler"]["spec"]["minReplicas"] >= 2  # the PDB can act


def test_the_prometheus_rule_carries_exactly_the_shipped_rules(manifests) -> None:
    rules = yaml.safe_load((DEPLOY / "prometheus" / "sse-audit-proxy.rules.yml").read_text())
    assert manifests["PrometheusRule"]["spec"] == rules
    check = subprocess.run(
        [sys.executable, str(K8S / "prometheusrule.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert check.returncode == 0, check.stderr


def with_canary_component(tmp: Path) -> dict[str, dict[str, Any]]:
    """The kustomization with its `components: [canary]` lines uncommented, as its comment says."""
    copy = tmp / "kubernetes"
    shutil.copytree(K8S, copy)
    kustomization = copy / "kustomization.yaml"
    text = kustomization.read_text()
    assert "# components:\n#   - canary\n" in text  # the hint an operator follows
    kustomization.write_text(text.replace("# components:\n#   - canary\n", "components:\n  - canary\n"))
    docs = built_manifests(copy)
    configs = [d for d in docs if d["kind"] == "ConfigMap"]
    assert len(configs) == 2
    out = by_kind([d for d in docs if d["kind"] != "ConfigMap"])
    out["ConfigMap"] = next(c for c in configs if c["metadata"]["name"] != "sse-audit-canary")
    out["CanaryConfigMap"] = next(c for c in configs if c["metadata"]["name"] == "sse-audit-canary")
    return out


def test_the_canary_component_mounts_a_percent_that_kubectl_patch_can_name(tmp_path: Path) -> None:
    """docs/operate/canary.md rolls back with `kubectl patch configmap sse-audit-canary`: that
    name must exist unhashed, be mounted as a directory (a subPath mount never updates), and be
    the file the proxy reads."""
    built = with_canary_component(tmp_path)
    percent = built["CanaryConfigMap"]
    assert percent["data"] == {"canary-percent": "0"}
    assert "sse-audit-canary" in (ROOT / "docs" / "operate" / "canary.md").read_text()
    pod = built["Deployment"]["spec"]["template"]["spec"]
    [volume] = [v for v in pod["volumes"] if "configMap" in v]
    assert volume["configMap"]["name"] == "sse-audit-canary"
    [mount] = [m for m in container(built)["volumeMounts"] if m["name"] == volume["name"]]
    assert "subPath" not in mount and mount.get("readOnly") is True
    env = {e["name"]: e.get("value") for e in container(built)["env"]}
    assert env["SSE_AUDIT_CANARY_PERCENT_FILE"] == f"{mount['mountPath']}/canary-percent"
    assert env["SSE_AUDIT_CANARY"].startswith("http") and env["SSE_AUDIT_CANARY_GUARD"] == "1"
    assert container(built)["envFrom"] == [{"configMapRef": {"name": built["ConfigMap"]["metadata"]["name"]}}]
    serve_help = subprocess.run(
        [sys.executable, "-m", "sse_audit_proxy", "serve", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    for name in env:  # every variable is one serve reads (a misspelt one would be ignored)
        assert re.search(rf"\[env:\s+{name}\]", serve_help), name
    for version in KUBERNETES_VERSIONS:
        for doc in (built["Deployment"], percent):
            kubernetes_validate.validate(doc, version, strict=True)


def compose() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return doc


def test_compose_file_is_valid_against_the_compose_specification() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_compose_runs_the_demo_gateway_unless_an_upstream_is_given() -> None:
    services = compose()["services"]
    assert set(services) >= {"gateway", "proxy", "prometheus", "grafana"}
    upstream = services["proxy"]["environment"]["SSE_AUDIT_UPSTREAM"]
    assert re.fullmatch(r"\$\{UPSTREAM_URL:-http://gateway:(\d+)\}", upstream)
    port = re.search(r":(\d+)\}", upstream).group(1)  # type: ignore[union-attr]
    assert services["gateway"]["command"][-1] == port
    build = services["proxy"]["build"]
    assert (COMPOSE.parent / build["context"] / build["dockerfile"]).is_file()


def test_compose_mounts_exist_and_wire_rules_and_dashboard() -> None:
    mounts = [v.split(":") for s in compose()["services"].values() for v in s.get("volumes", ())]
    for source, _target, *_ in mounts:
        assert (COMPOSE.parent / source).exists(), source
    targets = {t: (COMPOSE.parent / s).resolve() for s, t, *_ in mounts}
    assert targets["/etc/prometheus/rules/sse-audit-proxy.rules.yml"].name == "sse-audit-proxy.rules.yml"
    assert (targets["/var/lib/grafana/dashboards/sse-audit-proxy"] / "sse-audit-proxy.json").is_file()
    provider = yaml.safe_load((ROOT / "grafana/provisioning/dashboards/sse-audit-proxy.yml").read_text())
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards/sse-audit-proxy"


@pytest.mark.skipif(
    shutil.which("promtool") is None, reason="promtool missing: .ci/run installs Debian's prometheus package"
)
def test_compose_prometheus_config_is_valid_and_loads_the_rules() -> None:
    config_path = DEPLOY / "prometheus" / "prometheus.yml"
    proc = subprocess.run(
        ["promtool", "check", "config", "--syntax-only", str(config_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    config = yaml.safe_load(config_path.read_text())
    [glob] = config["rule_files"]
    assert Path("/etc/prometheus/rules/sse-audit-proxy.rules.yml").match(glob)
    [job] = config["scrape_configs"]
    assert "sse-audit-proxy" in job["job_name"]  # what the alert rules select on


BASE_PASSWD = Path("/usr/share/base-passwd")  # Debian's: the users every Debian image has


@pytest.mark.skipif(not BASE_PASSWD.is_dir() or shutil.which("useradd") is None, reason="not Debian")
def test_dockerfile_makes_its_user_on_a_debian_base(tmp_path: Path) -> None:
    """The image's RUN made a user `proxy`, which python:*-slim (Debian) has already: useradd
    failed, and with it `docker build`, compose and the Kubernetes image. Its user commands run
    here on a copy of Debian's own user files (no Docker daemon needed)."""
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "passwd").write_text((BASE_PASSWD / "passwd.master").read_text())
    (etc / "group").write_text((BASE_PASSWD / "group.master").read_text())
    for name in ("shadow", "gshadow"):
        (etc / name).touch()
    text = (DEPLOY / "Dockerfile").read_text().replace("\\\n", " ")
    final = text.rpartition("\nFROM ")[2]
    commands = [c.strip() for line in re.findall(r"^RUN (.+)$", final, re.M) for c in line.split("&&")]
    made = [c for c in commands if c.startswith(("useradd", "groupadd"))]
    assert made, final
    for command in made:
        tool, *args = command.split()
        proc = subprocess.run(
            [tool, "--prefix", str(tmp_path), *args], capture_output=True, text=True, timeout=30, check=False
        )
        assert proc.returncode == 0, (command, proc.stderr)
    uid, gid = re.findall(r"^USER (\d+):(\d+)$", final, re.M)[-1]
    users = {line.split(":")[2]: line.split(":")[3] for line in (etc / "passwd").read_text().splitlines()}
    assert users.get(uid) == gid  # USER names the user and group made


def test_dockerfile_is_non_root_with_a_healthcheck_on_healthz() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users and not users[-1].startswith(("0", "root"))
    assert re.search(r"^HEALTHCHECK .*\n?.*/healthz", text, re.M)
    assert re.search(r"^EXPOSE 8080 9464$", text, re.M)
    for source in re.findall(r"^COPY (?!--)(.+) \S+$", text, re.M):
        for path in source.split():
            assert (ROOT / path).exists(), path


async def _healthcheck(command: str, host: str, port: int) -> int:
    env = {**serve_env(), "SSE_AUDIT_METRICS_HOST": host, "SSE_AUDIT_METRICS_PORT": str(port)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", command, env=env, stderr=asyncio.subprocess.DEVNULL
    )
    return await asyncio.wait_for(proc.wait(), 10)


@pytest.mark.parametrize("written", ["127.0.0.2", " [127.0.0.2] "])
async def test_the_image_healthcheck_asks_the_address_the_metrics_port_listens_on(written: str) -> None:
    """The image's HEALTHCHECK, run as Docker would, against a real `serve`: it asked
    127.0.0.1 whatever SSE_AUDIT_METRICS_HOST said, and a healthy container listening on `::`
    or one address was marked unhealthy (an outside review); written as `serve` takes it too
    (spaces and brackets around it: a second pass)."""
    text = (DEPLOY / "Dockerfile").read_text()
    found = re.search(r'^\s*CMD python -c "(.+)"$', text, re.M)
    assert found is not None
    command = found[1]
    async with serve_process(URL("http://127.0.0.1:9"), "--metrics-host", "127.0.0.2") as proxy:
        port = proxy.metrics_url.port
        assert port is not None
        assert await _healthcheck(command, written, port) == 0
        assert await _healthcheck(command, "127.0.0.3", port) != 0  # nothing listens there
