"""docker-compose.yml and deploy/Dockerfile, checked without a Docker engine."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import pytest

from tickwire.schemas.settings import ENV_VARS
from tests.deploy import COMPOSE_FILE, DOCKERFILE, cli_accepts, compose, env_of, image_is_pinned

SERVICES = {
    "kafka", "db", "migrate", "sink-role", "grant-sink", "topics", "worker", "sink", "simulator", "maintain", "prometheus",
    "grafana",
}
SCALABLE = {"worker", "sink", "simulator"}


@pytest.fixture(scope="module")
def spec() -> dict:
    return compose()


@pytest.fixture(scope="module")
def services(spec: dict) -> dict:
    return spec["services"]


def _one_shots(services: dict) -> set[str]:
    return {name for name, s in services.items() if s.get("restart", "no") == "no"}


def _tickwire_services(services: dict) -> dict:
    """Services that run the tickwire image: the ones whose command is a tickwire command."""
    return {name: s for name, s in services.items() if str(s.get("image", "")).startswith("tickwire:")}


def test_compose_parses_and_has_every_service(services):
    assert SERVICES <= set(services), f"missing: {sorted(SERVICES - set(services))}"


def test_image_pin_rule_rejects_floating_tags():
    # The rule itself, so a too-lenient check cannot pass everything below.
    assert not image_is_pinned("grafana/grafana")
    assert not image_is_pinned("grafana/grafana:latest")
    assert not image_is_pinned("timescale/timescaledb:latest-pg15")
    assert not image_is_pinned("python:3.11-slim")
    assert not image_is_pinned("localhost:5000/tickwire")
    assert image_is_pinned("python:3.11.13-slim-bookworm")
    assert image_is_pinned("prom/prometheus:v3.5.0")


def test_every_image_is_pinned(services):
    unpinned = {name: s.get("image") for name, s in services.items() if not image_is_pinned(str(s.get("image", "")))}
    assert not unpinned, f"images without an x.y.z tag or digest: {unpinned}"


def test_dockerfile_base_is_pinned_non_root_with_the_tickwire_entrypoint():
    text = DOCKERFILE.read_text()
    bases = re.findall(r"^FROM\s+(\S+)", text, re.MULTILINE)
    assert bases and all(image_is_pinned(b) for b in bases), bases
    assert all(b.startswith("python:3.11") for b in bases), bases
    users = re.findall(r"^USER\s+(\S+)", text, re.MULTILINE)
    assert users and users[-1].split(":")[0] not in ("root", "0"), "the image must end as a non-root user"
    assert re.search(r'^ENTRYPOINT\s+\["tickwire"\]', text, re.MULTILINE)


def test_every_tickwire_variable_set_is_one_the_settings_read(services):
    used = {(name, var) for name, s in services.items() for var in env_of(s) if var.startswith("TICKWIRE_")}
    dockerfile_env = re.findall(r"\b(TICKWIRE_[A-Z0-9_]+)=", DOCKERFILE.read_text())
    used |= {("Dockerfile", var) for var in dockerfile_env}
    unknown = sorted((where, var) for where, var in used if var not in ENV_VARS)
    assert used, "no TICKWIRE_* variable found: the check would be vacuous"
    assert not unknown, f"not in schemas.settings.ENV_VARS: {unknown}"


def test_secret_files_are_mounted_secrets(spec, services):
    declared = set(spec.get("secrets") or {})
    checked = 0
    for name, s in services.items():
        mounted = {x if isinstance(x, str) else x.get("target", x["source"]) for x in s.get("secrets") or []}
        sources = {x if isinstance(x, str) else x["source"] for x in s.get("secrets") or []}
        assert sources <= declared, f"{name}: undeclared secrets {sources - declared}"
        for var, value in env_of(s).items():
            if var.endswith("_FILE") and value.startswith("/run/secrets/"):
                checked += 1
                assert value.removeprefix("/run/secrets/") in mounted, f"{name}: {var}={value} is not a mounted secret"
    assert checked, "no *_FILE secret found: passwords must come from files"


def test_no_password_is_written_in_the_file(spec, services):
    for name, s in services.items():
        for var, value in env_of(s).items():
            if "PASSWORD" in var.upper():
                assert var.endswith("_FILE") or value.startswith("${"), f"{name}: {var} holds a password in the file"
    for name, secret in (spec.get("secrets") or {}).items():
        assert set(secret) & {"environment", "file", "external"}, f"secret {name}: from the environment or a file"
    assert not re.search(r"postgres(ql)?://[^@/\s]+:[^@/\s]+@", COMPOSE_FILE.read_text()), "a password inside a DSN"


def test_metrics_listen_beyond_loopback_in_every_long_running_tickwire_service(services):
    long_running = set(_tickwire_services(services)) - _one_shots(services)
    assert long_running == {"worker", "sink", "simulator", "maintain"}
    for name in long_running:
        env = env_of(services[name])
        assert env.get("TICKWIRE_METRICS_HOST") == "0.0.0.0", name
        assert env.get("TICKWIRE_METRICS_PORT", "").isdigit(), f"{name}: no explicit TICKWIRE_METRICS_PORT"


def test_tickwire_commands_are_real_cli_commands(services):
    for name, s in _tickwire_services(services).items():
        command = s.get("command")
        assert isinstance(command, list) and command, f"{name}: command must be an exec-form list"
        assert cli_accepts([str(c) for c in command]), f"{name}: `tickwire {' '.join(map(str, command))}` does not parse"
    assert not cli_accepts(["simulate", "--no-such-flag"])  # the check can fail


def test_depends_on_targets_exist_and_conditions_fit(services):
    one_shots = _one_shots(services)
    for name, s in services.items():
        deps = s.get("depends_on") or {}
        if isinstance(deps, list):
            deps = {d: {"condition": "service_started"} for d in deps}
        for target, how in deps.items():
            assert target in services, f"{name} depends on unknown service {target}"
            condition = (how or {}).get("condition", "service_started")
            if condition == "service_healthy":
                assert "healthcheck" in services[target], f"{name} waits for {target} to be healthy, but it has no healthcheck"
            elif condition == "service_completed_successfully":
                assert target in one_shots, f"{name} waits for {target} to complete, but it restarts"
            else:
                pytest.fail(f"{name} -> {target}: use service_healthy or service_completed_successfully, not {condition}")


def test_pipeline_order(services):
    deps = {name: set(s.get("depends_on") or {}) for name, s in services.items()}
    assert {"db"} <= deps["migrate"]
    assert {"kafka"} <= deps["topics"]
    assert {"topics"} <= deps["worker"]
    assert {"migrate", "sink-role"} <= deps["grant-sink"]
    assert {"migrate", "grant-sink", "topics"} <= deps["sink"]
    assert {"topics"} <= deps["simulator"]
    assert {"migrate"} <= deps["maintain"]


def test_sink_connects_as_the_role_grant_sink_prepares(services):
    role = services["grant-sink"]["command"][1]
    owner_env, sink_env = env_of(services["migrate"]), env_of(services["sink"])
    owner, dsn = urlsplit(owner_env["TICKWIRE_PG_DSN"]), urlsplit(sink_env["TICKWIRE_PG_DSN"])
    assert dsn.username == role != owner.username, f"the sink connects as {dsn.username}, grant-sink prepares {role}"
    assert (dsn.hostname, dsn.port, dsn.path) == (owner.hostname, owner.port, owner.path), "the sink's database is another"
    # The sink holds its role's password and never the owner's.
    secrets = {x if isinstance(x, str) else x["source"] for x in services["sink"].get("secrets") or []}
    owner_secret = owner_env["TICKWIRE_PG_PASSWORD_FILE"].removeprefix("/run/secrets/")
    assert owner_secret not in secrets and sink_env["TICKWIRE_PG_PASSWORD_FILE"] != owner_env["TICKWIRE_PG_PASSWORD_FILE"]
    # sink-role creates the role with the password the sink reads.
    script = next(str(v).split(":")[0] for v in services["sink-role"]["volumes"] if ".sql:" in str(v))
    text = (COMPOSE_FILE.parent / script).read_text()
    assert f"CREATE ROLE {role} LOGIN" in text and f"ALTER ROLE {role} PASSWORD" in text, script
    assert sink_env["TICKWIRE_PG_PASSWORD_FILE"] in text, f"{script} sets another password than the sink reads"


def test_long_running_services_have_healthchecks_without_curl_or_wget(services):
    for name in set(services) - _one_shots(services):
        check = services[name].get("healthcheck")
        assert check and check.get("test") and not check.get("disable"), f"{name}: no healthcheck"
        test = " ".join(check["test"]) if isinstance(check["test"], list) else check["test"]
        assert not re.search(r"\b(curl|wget)\b", test), f"{name}: the healthcheck needs curl/wget"


def test_tickwire_healthchecks_probe_their_own_metrics_port(services):
    for name in ("worker", "sink"):
        test = " ".join(services[name]["healthcheck"]["test"])
        assert "/readyz" in test and "TICKWIRE_METRICS_PORT" in test, name
    assert "/healthz" in " ".join(services["simulator"]["healthcheck"]["test"])
    assert "/healthz" in " ".join(services["maintain"]["healthcheck"]["test"])


def test_scalable_services_have_no_fixed_name_or_host_port(services):
    for name in SCALABLE:
        assert "container_name" not in services[name], f"{name}: container_name blocks --scale"
        assert not services[name].get("ports"), f"{name}: a host port blocks --scale"


def test_host_ports_bind_to_loopback(services):
    for name, s in services.items():
        for port in s.get("ports") or []:
            assert str(port).startswith("127.0.0.1:"), f"{name}: {port} is published on every interface"


def test_named_volumes_are_declared_and_used(spec, services):
    declared = set(spec.get("volumes") or {})
    used = set()
    for name, s in services.items():
        for volume in s.get("volumes") or []:
            source = volume.split(":", 1)[0] if isinstance(volume, str) else volume.get("source", "")
            if source and not source.startswith((".", "/", "~", "$")):
                assert source in declared, f"{name}: volume {source} is not declared"
                used.add(source)
    assert declared == used, f"declared but unused: {declared - used}"
    for name in ("kafka", "db", "prometheus", "grafana"):
        assert any(
            str(v).split(":", 1)[0] in declared for v in services[name].get("volumes") or []
        ), f"{name}: its data needs a named volume"


def test_bind_mounted_paths_exist(services):
    for name, s in services.items():
        for volume in s.get("volumes") or []:
            source = volume.split(":", 1)[0] if isinstance(volume, str) else volume.get("source", "")
            if source.startswith("./"):
                assert (COMPOSE_FILE.parent / source).exists(), f"{name}: {source} does not exist"
