"""deploy/k8s: manifests parse, probes hit /healthz and /readyz on the metrics port, every
TICKWIRE_* variable is one the settings read, secrets arrive as mounted files, pods pass the
restricted Pod Security Standard, and the sink connects as the role grant-sink prepares."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
import yaml

from tickwire.schemas.settings import ENV_VARS
from tests.deploy import DEPLOY, cli_accepts, image_is_pinned

K8S = DEPLOY / "k8s"
# The commands that talk to Kafka, and so need its SASL password when it asks for one.
KAFKA_CLIENTS = {"worker", "sink", "topics"}


@pytest.fixture(scope="module")
def docs() -> list[dict]:
    found = []
    for path in sorted(K8S.glob("*.yaml")):
        found.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    assert found, "no manifests in deploy/k8s"
    return found


def _by_kind(docs: list[dict], kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in docs if d.get("kind") == kind}


def _workloads(docs: list[dict]) -> dict[str, dict]:
    """Deployments, Jobs, and each CronJob's job (its ``spec`` holds the pod template)."""
    cron = {name: {"spec": job["spec"]["jobTemplate"]["spec"]} for name, job in _by_kind(docs, "CronJob").items()}
    return {**_by_kind(docs, "Deployment"), **_by_kind(docs, "Job"), **cron}


def _config(docs: list[dict]) -> dict[str, str]:
    return {k: str(v) for cm in _by_kind(docs, "ConfigMap").values() for k, v in (cm.get("data") or {}).items()}


def _env(container: dict, docs: list[dict]) -> dict[str, str]:
    """What the container sees: its ConfigMaps' data, then its own env entries."""
    env: dict[str, str] = {}
    maps = _by_kind(docs, "ConfigMap")
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            name = source["configMapRef"]["name"]
            assert name in maps, f"{container['name']}: ConfigMap {name} is not among the manifests"
            env.update({k: str(v) for k, v in (maps[name].get("data") or {}).items()})
    env.update({e["name"]: str(e.get("value", "")) for e in container.get("env", [])})
    return env


def _pod(workload: dict) -> dict:
    return workload["spec"]["template"]["spec"]


def _secret_keys(pod: dict) -> set[str]:
    """Every Secret key the pod's volumes mount."""
    return {item["key"] for v in pod.get("volumes", []) if "secret" in v for item in v["secret"].get("items", [])}


def _secret_key(pod: dict, container: dict, path: str) -> str | None:
    """The Secret key mounted at ``path`` in ``container``, or None."""
    volumes = {v["name"]: v["secret"] for v in pod.get("volumes", []) if "secret" in v}
    for mount in container.get("volumeMounts", []):
        prefix = mount["mountPath"].rstrip("/") + "/"
        if mount["name"] in volumes and path.startswith(prefix):
            for item in volumes[mount["name"]].get("items", []):
                if item["path"] == path.removeprefix(prefix):
                    return item["key"]
    return None


def test_manifests_have_no_namespace(docs):
    assert not [d["metadata"]["name"] for d in docs if "namespace" in d.get("metadata", {})]


def test_worker_sink_and_migrate_exist(docs):
    deployments = _by_kind(docs, "Deployment")
    commands = {name: d["spec"]["template"]["spec"]["containers"][0]["args"][0] for name, d in _workloads(docs).items()}
    assert {"worker", "sink"} <= {commands[n] for n in deployments}
    assert "migrate" in {commands[n] for n in _by_kind(docs, "Job")}


def test_containers_run_real_commands_with_pinned_images(docs):
    for name, workload in _workloads(docs).items():
        for container in workload["spec"]["template"]["spec"]["containers"]:
            assert image_is_pinned(container["image"]), f"{name}: {container['image']}"
            assert cli_accepts([str(a) for a in container.get("args", [])]), f"{name}: {container.get('args')}"


def test_every_tickwire_variable_is_one_the_settings_read(docs):
    used = set(_config(docs))
    for workload in _workloads(docs).values():
        for container in workload["spec"]["template"]["spec"]["containers"]:
            used |= {e["name"] for e in container.get("env", [])}
    tickwire = {v for v in used if v.startswith("TICKWIRE_")}
    assert tickwire, "no TICKWIRE_* variable: the check would be vacuous"
    assert not tickwire - ENV_VARS, f"not in schemas.settings.ENV_VARS: {sorted(tickwire - ENV_VARS)}"


def test_probes_hit_healthz_and_readyz_on_the_metrics_port(docs):
    deployments = _by_kind(docs, "Deployment")
    assert deployments
    for name, deployment in deployments.items():
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            env = _env(container, docs)
            assert env.get("TICKWIRE_METRICS_HOST") == "0.0.0.0", f"{name}: probes cannot reach loopback"
            ports = {p.get("name"): p["containerPort"] for p in container.get("ports", [])}
            for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
                get = container.get(probe, {}).get("httpGet")
                assert get and get["path"] == path, f"{name}: {probe} must GET {path}"
                port = ports.get(get["port"], get["port"])
                assert str(port) == env.get("TICKWIRE_METRICS_PORT"), (
                    f"{name}: {probe} on port {port}, metrics served on {env.get('TICKWIRE_METRICS_PORT')}"
                )


def test_resources_have_requests_and_limits(docs):
    for name, workload in _workloads(docs).items():
        for container in workload["spec"]["template"]["spec"]["containers"]:
            resources = container.get("resources", {})
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(resources.get(kind, {})), f"{name}: {kind} needs cpu and memory"


def test_secret_files_are_mounted_from_a_secret(docs):
    checked = 0
    for name, workload in _workloads(docs).items():
        pod = workload["spec"]["template"]["spec"]
        secret_volumes = {v["name"] for v in pod.get("volumes", []) if "secret" in v}
        for container in pod["containers"]:
            mounts = [m["mountPath"].rstrip("/") + "/" for m in container.get("volumeMounts", []) if m["name"] in secret_volumes]
            for var, value in _env(container, docs).items():
                if var.startswith("TICKWIRE_") and var.endswith("_FILE"):
                    checked += 1
                    assert any(value.startswith(m) for m in mounts), f"{name}: {var}={value} is not in a mounted Secret"
    assert checked, "no *_FILE secret: the database password must come from a Secret"
    assert not any("PASSWORD" in k and not k.endswith("_FILE") for k in _config(docs)), "a password in the ConfigMap"


def test_pods_pass_the_restricted_pod_security_standard(docs):
    # A namespace labelled pod-security.kubernetes.io/enforce=restricted admits every pod.
    for name, workload in _workloads(docs).items():
        pod = _pod(workload)
        context = pod.get("securityContext", {})
        assert context.get("runAsNonRoot") is True, name
        assert context.get("seccompProfile", {}).get("type") == "RuntimeDefault", f"{name}: no RuntimeDefault seccomp profile"
        for container in pod["containers"]:
            security = container.get("securityContext", {})
            assert security.get("allowPrivilegeEscalation") is False, f"{name}: privilege escalation allowed"
            assert security.get("capabilities", {}).get("drop") == ["ALL"], f"{name}: capabilities kept"


def test_every_kafka_client_reads_the_sasl_password_from_the_secret(docs):
    clients = 0
    for name, workload in _workloads(docs).items():
        pod = _pod(workload)
        for container in pod["containers"]:
            if container["args"][0] in KAFKA_CLIENTS:
                clients += 1
                path = _env(container, docs).get("TICKWIRE_KAFKA_SASL_PASSWORD_FILE", "")
                assert _secret_key(pod, container, path) == "kafka_sasl_password", f"{name}: no Kafka SASL password file"
    assert clients == len(KAFKA_CLIENTS), "a Kafka client is missing from the manifests"


def test_sink_connects_as_the_role_grant_sink_prepares(docs):
    workloads = _workloads(docs)
    containers = {c["args"][0]: (_pod(w), c) for w in workloads.values() for c in _pod(w)["containers"]}
    role = containers["grant-sink"][1]["args"][1]
    owner = urlsplit(_config(docs)["TICKWIRE_PG_DSN"])
    pod, sink = containers["sink"]
    env = _env(sink, docs)
    dsn = urlsplit(env["TICKWIRE_PG_DSN"])
    assert dsn.username == role != owner.username, f"the sink connects as {dsn.username}, grant-sink prepares {role}"
    assert (dsn.hostname, dsn.port, dsn.path) == (owner.hostname, owner.port, owner.path), "the sink's database is another"
    assert _secret_key(pod, sink, env["TICKWIRE_PG_PASSWORD_FILE"]) == "pg_sink_password"
    assert "pg_password" not in _secret_keys(pod), "the sink must not hold the tables' owner's password"


def test_every_deployment_has_a_disruption_budget_of_one_pod(docs):
    budgets = _by_kind(docs, "PodDisruptionBudget")
    for name, deployment in _by_kind(docs, "Deployment").items():
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        chosen = [b for b in budgets.values() if b["spec"]["selector"]["matchLabels"].items() <= labels.items()]
        assert len(chosen) == 1, f"{name}: {len(chosen)} PodDisruptionBudgets select its pods"
        # One eviction at a time, one rebalance at a time; minAvailable could block every drain.
        spec = chosen[0]["spec"]
        assert spec.get("maxUnavailable") == 1 and "minAvailable" not in spec, f"{name}: {spec}"


def test_jobs_do_not_restart_forever(docs):
    cron = {name: {"spec": job["spec"]["jobTemplate"]["spec"]} for name, job in _by_kind(docs, "CronJob").items()}
    assert "tickwire-maintain" in cron, "plain PostgreSQL's daily maintenance is scheduled"
    for name, job in {**_by_kind(docs, "Job"), **cron}.items():
        assert job["spec"]["template"]["spec"]["restartPolicy"] in {"OnFailure", "Never"}, name
        assert job["spec"].get("backoffLimit") is not None, name


def test_replicas_do_not_exceed_partitions(docs):
    from tickwire.schemas.topics import BARS, CONDITIONS

    inputs = {"worker": BARS.partitions, "sink": CONDITIONS.partitions}
    for name, deployment in _by_kind(docs, "Deployment").items():
        command = deployment["spec"]["template"]["spec"]["containers"][0]["args"][0]
        assert deployment["spec"].get("replicas", 1) <= inputs[command], f"{name}: idle replicas beyond the partitions"


def test_kustomization_lists_every_manifest():
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    present = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == present, f"unlisted: {present - listed}; missing: {listed - present}"


def test_readme_explains_scaling_by_partitions():
    text = (K8S / "README.md").read_text()
    assert "partitions" in text and "replicas" in text


def test_readme_lists_every_manifest_and_secret_key(docs):
    text = (K8S / "README.md").read_text()
    for path in K8S.glob("*.yaml"):
        assert f"`{path.name}`" in text, f"README.md does not list {path.name}"
    keys = set().union(*(_secret_keys(_pod(w)) for w in _workloads(docs).values()))
    assert keys and all(key in text for key in keys), f"README.md must say how to create the Secret's keys {sorted(keys)}"
