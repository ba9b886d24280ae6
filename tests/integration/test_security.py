"""The pipeline through a broker listener that requires SASL/SCRAM-SHA-512, and no secret in any output."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import asyncpg
import msgspec
import pytest
from aiokafka import AIOKafkaProducer

from tickwire.schemas.settings import Settings
from tickwire.schemas.topics import BARS
from tickwire.streams.topics import ensure_topics
from tickwire.streams.simulator import MarketSimulator
from tests.conftest import ROOT, wait_for
from tests.integration.test_pipeline import START

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def sasl(isolated: Settings) -> tuple[Settings, dict[str, str]]:
    var = Path(os.environ.get("TICKWIRE_VAR_DIR", ROOT / "var" / "test"))
    password_file = var / "kafka" / "sasl-password"
    port = os.environ.get("TICKWIRE_LOCAL_KAFKA_SASL_PORT")
    if not port or not password_file.exists():
        pytest.fail("the SASL listener of deploy/local/kafka.sh is not configured (run via deploy/local/test.sh)")
    env = {
        "TICKWIRE_KAFKA_BOOTSTRAP": f"127.0.0.1:{port}",
        "TICKWIRE_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "TICKWIRE_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "TICKWIRE_KAFKA_SASL_USERNAME": "tickwire",
        "TICKWIRE_KAFKA_SASL_PASSWORD_FILE": str(password_file),
    }
    settings = Settings.from_env({**os.environ, **env}, topic_prefix=isolated.topic_prefix, pg_dsn=isolated.pg_dsn)
    return settings, env


async def test_worker_and_sink_run_over_sasl_scram(sasl, processes):
    settings, env = sasl
    await ensure_topics(settings)
    processes.extra_env = env
    processes.start("worker")
    processes.start("sink")
    producer = AIOKafkaProducer(**settings.kafka_options(), acks="all")
    await producer.start()
    try:
        for bar in MarketSimulator(["SASL"], seed=8, start=START).bars(50):
            await producer.send(settings.topic(BARS.name), key=b"SASL", value=msgspec.json.encode(bar))
        await producer.flush()
    finally:
        await producer.stop()
    conn = await asyncpg.connect(**settings.pg_options())
    try:
        async def written():
            return await conn.fetchval("SELECT count(*) FROM market_conditions WHERE symbol = 'SASL'") >= 50

        assert await wait_for(written, timeout_s=120, check=processes.check_alive)
    finally:
        await conn.close()
    logs = processes.logs()
    for secret in (settings.kafka_sasl_password, settings.pg_password):
        assert secret and secret not in logs


def test_a_wrong_password_is_a_clear_error_without_the_secret(sasl, tmp_path):
    _, env = sasl
    wrong = tmp_path / "pw"
    wrong.write_text("not-the-password-3141")
    result = subprocess.run(
        [sys.executable, "-m", "tickwire.streams.cli", "topics"],
        env={**os.environ, **env, "TICKWIRE_KAFKA_SASL_PASSWORD_FILE": str(wrong)},
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "tickwire: cannot reach Kafka" in output
    assert "Traceback" not in output
    assert "not-the-password-3141" not in output


def test_a_wrong_database_password_is_a_clear_error_without_the_secret(isolated, tmp_path):
    wrong = tmp_path / "pw"
    wrong.write_text("wrong-db-secret-2718")
    result = subprocess.run(
        [sys.executable, "-m", "tickwire.streams.cli", "migrate"],
        env={**os.environ, "TICKWIRE_PG_DSN": isolated.pg_dsn, "TICKWIRE_PG_PASSWORD_FILE": str(wrong)},
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )
    assert result.returncode == 1
    assert "tickwire: cannot connect to PostgreSQL at postgresql://tickwire@" in result.stderr
    assert "Traceback" not in result.stderr and "wrong-db-secret-2718" not in result.stderr
