"""Least privilege for sinks: a role that may read and write Tickwire's rows, and no DDL.

Migrations run as the owner role; sinks connect as a role granted here:
SELECT/INSERT/UPDATE on every table in the schema (but no UPDATE on the append-only
``APPEND_ONLY`` tables), USAGE on its sequences (BIGSERIAL ids), TEMPORARY on the
database (the COPY staging tables), and nothing else.
The role itself is created by whoever administers the cluster.
"""

from __future__ import annotations

import asyncpg

from tickwire.schemas.errors import TickwireError

# %I quotes the identifiers: the role name is never spliced into SQL as text.
_STATEMENTS = (
    "SELECT format('GRANT CONNECT, TEMPORARY ON DATABASE %I TO %I', current_database(), $1::text)",
    "SELECT format('GRANT USAGE ON SCHEMA %I TO %I', current_schema(), $1::text)",
    "SELECT format('GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA %I TO %I', current_schema(), $1::text)",
    "SELECT format('GRANT USAGE ON ALL SEQUENCES IN SCHEMA %I TO %I', current_schema(), $1::text)",
    "SELECT format('ALTER DEFAULT PRIVILEGES IN SCHEMA %I GRANT SELECT, INSERT, UPDATE ON TABLES TO %I', current_schema(), $1::text)",
    "SELECT format('ALTER DEFAULT PRIVILEGES IN SCHEMA %I GRANT USAGE ON SEQUENCES TO %I', current_schema(), $1::text)",
)
APPEND_ONLY = ("execution_audit",)
_REVOKES = (
    "SELECT format('REVOKE UPDATE ON %I FROM %I', table_name, $1::text) FROM unnest($2::text[]) AS table_name"
    " WHERE to_regclass(table_name) IS NOT NULL"
)


class UnknownRole(TickwireError):
    """The role to grant to does not exist."""


async def grant_sink_role(conn: asyncpg.Connection, role: str) -> None:
    if not await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role):
        raise UnknownRole(f"role {role!r} does not exist; create it first (CREATE ROLE ... LOGIN)")
    async with conn.transaction():
        for statement in _STATEMENTS:
            await conn.execute(await conn.fetchval(statement, role))
        for revoke in await conn.fetch(_REVOKES, role, list(APPEND_ONLY)):
            await conn.execute(revoke[0])
