"""Static checks of deploy/ and docker-compose.yml (no Docker engine, no cluster needed).

Helpers shared by the deploy tests live here: loading the files, the metric names the
code really exports, the metric names a PromQL expression uses.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = DEPLOY / "Dockerfile"

# A tag with a full x.y.z version: "latest", "15", "3.11-slim" or "latest-pg15" would let
# a rebuild pull something else.
_PINNED_TAG = re.compile(r"^v?\d+\.\d+\.\d+([.-][A-Za-z0-9.-]+)?$")
_METRIC = re.compile(r"(?<![\w:])(tickwire_[A-Za-z0-9_:]*)")


def load_yaml(path: Path) -> object:
    with path.open() as f:
        return yaml.safe_load(f)


def compose() -> dict:
    return load_yaml(COMPOSE_FILE)


def image_is_pinned(image: str) -> bool:
    """True if ``image`` names a digest or an exact x.y.z version tag."""
    if "@sha256:" in image:
        return True
    name, sep, tag = image.rpartition(":")
    if not sep or "/" in tag:  # no tag at all, or the colon was a registry port
        return False
    return bool(_PINNED_TAG.match(tag))


def exported_metric_names() -> set[str]:
    """Every series name a process can expose, from a fresh Metrics() on its own registry.

    Labelled families without children yield no samples, so names come from the family
    type: counters are scraped as ``_total``, histograms as ``_bucket``/``_sum``/``_count``.
    """
    from prometheus_client import CollectorRegistry

    from tickwire.schemas.metrics import Metrics

    names: set[str] = set()
    for family in Metrics(CollectorRegistry()).registry.collect():
        if family.type == "counter":
            names |= {family.name + "_total", family.name + "_created"}
        elif family.type == "histogram":
            names |= {family.name + s for s in ("_bucket", "_sum", "_count", "_created")}
        elif family.type == "summary":
            names |= {family.name, family.name + "_sum", family.name + "_count", family.name + "_created"}
        else:
            names.add(family.name)
    return names


def metric_names(expr: str) -> set[str]:
    """The tickwire_* metric names a PromQL expression refers to."""
    return set(_METRIC.findall(expr))


def env_of(service: dict) -> dict[str, str]:
    """A compose service's environment as a dict, whichever of the two forms it uses."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def cli_accepts(args: list[str]) -> bool:
    """True if the tickwire CLI parses ``args`` (a real command with real flags)."""
    import contextlib
    import io

    from tickwire.streams.cli import _parser

    try:
        with contextlib.redirect_stderr(io.StringIO()):
            _parser().parse_args(args)
    except SystemExit:
        return False
    return True
