"""Shared fixtures. Integration tests use the real local Kafka and PostgreSQL that
deploy/local/test.sh starts; each test module gets its own topic prefix and database."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from tickwire.schemas.settings import Settings

ROOT = Path(__file__).resolve().parent.parent


def _reachable(hostport: str) -> bool:
    host, _, port = hostport.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=2).close()
        return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def base_settings() -> Settings:
    settings = Settings.from_env()
    pg_host = settings.pg_dsn.split("@", 1)[-1].split("/", 1)[0]
    missing = [name for name, hp in (("Kafka", settings.kafka_bootstrap.split(",")[0]), ("PostgreSQL", pg_host)) if not _reachable(hp)]
    if missing:
        reason = f"{' and '.join(missing)} not reachable: run the suite with deploy/local/test.sh"
        if os.environ.get("TICKWIRE_REQUIRE_SERVICES") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    return settings


@pytest.fixture(scope="module")
def pg_settings() -> Settings:
    """Settings for tests that need only PostgreSQL (each makes its own databases)."""
    settings = Settings.from_env()
    if not _reachable(settings.pg_dsn.split("@", 1)[-1].split("/", 1)[0]):
        reason = "PostgreSQL not reachable: run the suite with deploy/local/test.sh"
        if os.environ.get("TICKWIRE_REQUIRE_SERVICES") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    return settings


@pytest.fixture(scope="module")
async def isolated(base_settings: Settings):
    """Settings with a fresh topic prefix and a freshly migrated database of their own."""
    import asyncpg

    from tickwire.sinks.migrate import migrate

    name = "tw_" + uuid.uuid4().hex[:10]
    admin = await asyncpg.connect(**base_settings.pg_options())
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    dsn = base_settings.pg_dsn.rsplit("/", 1)[0] + "/" + name
    settings = Settings.from_env(topic_prefix=f"{name}.", pg_dsn=dsn)
    conn = await asyncpg.connect(**settings.pg_options())
    await migrate(conn)
    await conn.close()
    yield settings
    if os.environ.get("TICKWIRE_TEST_KEEP_DB"):  # to look into a failure: run pytest with -s
        print(f"kept database {name}")
        return
    # A fresh connection: fault tests restart the server under the module's feet.
    admin = await asyncpg.connect(**base_settings.pg_options())
    await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    await admin.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_port_run(count: int) -> int:
    """The first of ``count`` consecutive free ports, below Linux's ephemeral range: the
    kernel's own picks for outgoing connections (Kafka's, PostgreSQL's) never land on them."""
    for first in random.sample(range(20000, 32768 - count), 200):
        with contextlib.ExitStack() as held:
            try:
                for port in range(first, first + count):
                    held.enter_context(socket.socket()).bind(("127.0.0.1", port))
            except OSError:
                continue
            return first
    raise RuntimeError(f"no {count} consecutive free ports between 20000 and 32767")


# Python source that makes the packages of pyproject.toml's extras (and the modules needing
# them) unimportable, as in an install of the core alone: run it first in a fresh interpreter.
WITHOUT_EXTRAS = """
import json, sys
from importlib.abc import MetaPathFinder

HEAVY = ("faust", "numba", "numpy", "pyarrow", "asyncpg")

class WithoutExtras(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in HEAVY:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)

sys.meta_path.insert(0, WithoutExtras())
"""


class Processes:
    """``tickwire`` subcommands as child processes, stopped (and reaped) at teardown."""

    def __init__(self, settings: Settings, log_dir: Path) -> None:
        self.settings = settings
        self.log_dir = log_dir
        self.children: list[tuple[subprocess.Popen, Path]] = []
        self.extra_env: dict[str, str] = {}

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            TICKWIRE_TOPIC_PREFIX=self.settings.topic_prefix,
            TICKWIRE_PG_DSN=self.settings.pg_dsn,
            TICKWIRE_FLUSH_INTERVAL_S="0.2",
        )
        env.update(self.extra_env)
        return env

    def start(self, *command: str, env: dict[str, str] | None = None) -> tuple[subprocess.Popen, int]:
        """``tickwire <command>``, with ``env`` over the module's environment."""
        port = free_port()
        log = self.log_dir / f"{command[0]}-{len(self.children)}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "tickwire.streams.cli", *command, "--metrics-port", str(port)],
                env=self.env() | (env or {}),
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
            )
        self.children.append((proc, log))
        return proc, port

    def logs(self) -> str:
        return "".join(log.read_text(errors="replace") for _, log in self.children)

    def check_alive(self, may_end: tuple[int, ...] = ()) -> None:
        """Fail, with its log's end, on a child that has ended with another code than ``may_end``."""
        for proc, log in self.children:
            if proc.poll() is not None and proc.returncode not in may_end:
                raise AssertionError(f"{proc.args[3]} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")

    def check_none_crashed(self) -> None:
        """For a test that stops and SIGKILLs children itself: only a child that ended on its
        own with an error fails it."""
        self.check_alive(may_end=(0, -signal.SIGKILL))

    def stop(self) -> None:
        for proc, _ in self.children:
            if proc.poll() is None:
                proc.terminate()
        for proc, _ in self.children:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture(scope="module")
def processes(isolated: Settings, tmp_path_factory):
    procs = Processes(isolated, tmp_path_factory.mktemp("logs"))
    yield procs
    procs.stop()


def scraped(port: int, sample: str) -> float:
    """The value of ``sample`` (a metric with its labels, as exposed) on a process's /metrics;
    0 while it does not answer or has not got the sample yet."""
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
    except OSError:
        return 0.0
    return next((float(line.split()[-1]) for line in text.splitlines() if line.startswith(sample + " ")), 0.0)


async def wait_for(predicate, *, timeout_s: float, interval_s: float = 0.5, check=None):
    """Await ``predicate()`` until truthy; return its last value (falsy on timeout)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = await predicate()
        if value or time.monotonic() > deadline:
            return value
        if check:
            check()
        await asyncio.sleep(interval_s)


async def publish_stream(settings: Settings, stream) -> None:
    """Each (topic, message) of ``stream`` to its topic, keyed by the message's symbol, and
    on the broker (acks=all) when this returns."""
    import msgspec
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(**settings.kafka_options(), acks="all", linger_ms=5)
    await producer.start()
    try:
        encode = msgspec.json.Encoder().encode
        for spec, message in stream:
            await producer.send(settings.topic(spec.name), key=message.symbol.encode(), value=encode(message))
        await producer.flush()
    finally:
        await producer.stop()
