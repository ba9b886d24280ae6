"""Benchmarks need the real broker and database: start the local ones if nothing answers."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

from tickwire.schemas.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def local_settings(**overrides: object) -> Settings:
    """Settings for the local stack of deploy/local (started here when not reachable)."""
    return Settings.from_env(local_env(), **overrides)


def local_env() -> dict[str, str]:
    """The environment for the local stack (started here when not reachable): also what a
    ``tickwire`` child process needs to reach it."""
    env = dict(os.environ)
    # deploy/local/common.sh's overrides (TICKWIRE_VAR_DIR, TICKWIRE_LOCAL_*_PORT) pick the stack,
    # so a bench can run beside another test run on its own ports and data.
    var = Path(env.get("TICKWIRE_VAR_DIR") or ROOT / "var")
    kafka_port = env.get("TICKWIRE_LOCAL_KAFKA_PORT", "19092")
    pg_port = env.get("TICKWIRE_LOCAL_PG_PORT", "15432")
    env.setdefault("TICKWIRE_KAFKA_BOOTSTRAP", f"127.0.0.1:{kafka_port}")
    env.setdefault("TICKWIRE_PG_DSN", f"postgresql://tickwire@127.0.0.1:{pg_port}/tickwire")
    env.setdefault("TICKWIRE_PG_PASSWORD_FILE", str(var / "pg" / "password"))
    for script, hostport in (("kafka.sh", env["TICKWIRE_KAFKA_BOOTSTRAP"]), ("postgres.sh", env["TICKWIRE_PG_DSN"].split("@")[1].split("/")[0])):
        host, port = hostport.rsplit(":", 1)
        try:
            socket.create_connection((host, int(port)), timeout=1).close()
        except OSError:
            subprocess.run(["bash", str(ROOT / "deploy" / "local" / script), "start"], check=True)
    return env


def emit(bench: str, metric: str, value: float, unit: str, baseline: str, baseline_value: float) -> None:
    import json

    print(json.dumps({
        "bench": bench, "metric": metric, "value": round(value, 3), "unit": unit,
        "baseline": baseline, "baseline_value": round(baseline_value, 3),
        "ratio": round(value / baseline_value, 4) if baseline_value else None,
    }), flush=True)
