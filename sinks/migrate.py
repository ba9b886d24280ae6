"""Versioned SQL migrations: applied in order, each once, under an advisory lock.

A migration file ``schemas/migrations/NNNN_name.sql`` has a common part and optional
``-- @timescaledb`` and ``-- @postgres`` sections; the flavour is chosen once, when the
first migration runs (TimescaleDB if the extension can be created), and recorded so
later migrations follow it. ``/* partition_by("col") */`` after a CREATE TABLE becomes
``PARTITION BY RANGE ("col")`` on plain PostgreSQL and stays a comment on TimescaleDB.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources
from typing import Literal

import asyncpg

Flavor = Literal["timescaledb", "postgres"]
LOCK_ID = 0x7469636B  # "tick": serialises concurrent migrate runs
_SECTION = re.compile(r"^-- @(timescaledb|postgres)\s*$", re.MULTILINE)
_PARTITION = re.compile(r'/\* partition_by\(("?\w+"?)\) \*/')
_NAME = re.compile(r"^(\d{4})_(\w+)\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()

    def render(self, flavor: Flavor) -> str:
        """The SQL to run on ``flavor``: common part plus that flavour's section."""
        parts = _SECTION.split(self.sql)
        common, sections = parts[0], dict(zip(parts[1::2], parts[2::2]))
        if flavor == "postgres":
            common = _PARTITION.sub(r"PARTITION BY RANGE (\1)", common)
        return common + sections.get(flavor, "")


def load_migrations() -> list[Migration]:
    found = []
    for entry in resources.files("tickwire.schemas.migrations").iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text()))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"two migrations share a version: {versions}")
    return found


async def detect_flavor(conn: asyncpg.Connection) -> Flavor:
    """TimescaleDB when the extension is installed or can be created here."""
    if await conn.fetchval("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'"):
        return "timescaledb"
    if not await conn.fetchval("SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'"):
        return "postgres"
    # Installed but not preloaded, CREATE EXTENSION would fail and close the connection.
    # The preloaded loader defines this setting (shared_preload_libraries itself is
    # readable by superusers only).
    if not await conn.fetchval("SELECT 1 FROM pg_settings WHERE name = 'timescaledb.bgw_launcher_poll_time'"):
        return "postgres"
    await conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
    return "timescaledb"


async def migrate(
    conn: asyncpg.Connection, *, flavor: Flavor | None = None, until: int | None = None
) -> list[Migration]:
    """Apply pending migrations (up to version ``until`` if given); return those applied.

    ``flavor`` forces the flavour of a fresh database (``"postgres"`` keeps a database
    plain even where TimescaleDB is installed); by default it is detected. A database
    migrated before keeps its recorded flavour: asking for the other one is an error.
    """
    if flavor not in (None, "timescaledb", "postgres"):
        raise ValueError(f"unknown flavor {flavor!r}")
    await conn.execute("SET timezone = 'UTC'")
    await conn.execute("SELECT pg_advisory_lock($1)", LOCK_ID)
    try:
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS tickwire_migrations (
                   version INTEGER PRIMARY KEY,
                   name TEXT NOT NULL,
                   flavor TEXT NOT NULL,
                   checksum TEXT NOT NULL,
                   applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"""
        )
        rows = await conn.fetch("SELECT version, flavor, checksum, name FROM tickwire_migrations")
        done = {r["version"]: r for r in rows}
        if rows:
            recorded: Flavor = rows[0]["flavor"]
            if flavor is not None and flavor != recorded:
                raise RuntimeError(f"this database was migrated as {recorded}, not {flavor}")
            flavor = recorded
        elif flavor is None:
            flavor = await detect_flavor(conn)
        elif flavor == "timescaledb":
            await conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
        applied = []
        for migration in load_migrations():
            if until is not None and migration.version > until:
                break
            if migration.version in done:
                if done[migration.version]["checksum"] != migration.checksum:
                    raise RuntimeError(
                        f"migration {migration.version:04d}_{migration.name} changed after it was applied"
                    )
                continue
            async with conn.transaction():
                sql = migration.render(flavor)
                if not _only_comments(sql):  # a migration may hold nothing for this flavour
                    await conn.execute(sql)
                await conn.execute(
                    "INSERT INTO tickwire_migrations (version, name, flavor, checksum) VALUES ($1, $2, $3, $4)",
                    migration.version,
                    migration.name,
                    flavor,
                    migration.checksum,
                )
            applied.append(migration)
        return applied
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", LOCK_ID)


def _only_comments(sql: str) -> bool:
    return all(not line.strip() or line.strip().startswith("--") for line in sql.splitlines())


async def flavor_of(conn: asyncpg.Connection) -> Flavor | None:
    """The flavour the schema was migrated with, or None before the first migration."""
    if not await conn.fetchval("SELECT to_regclass('tickwire_migrations')"):
        return None
    return await conn.fetchval("SELECT flavor FROM tickwire_migrations ORDER BY version LIMIT 1")
