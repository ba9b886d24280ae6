"""A sink role may write rows and nothing more."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone

import asyncpg
import msgspec
import pytest

from tickwire.schemas.execution import AuditRow
from tickwire.schemas.market import Condition
from tickwire.schemas.tables import EXECUTION_AUDIT, MARKET_CONDITIONS
from tickwire.sinks.grants import UnknownRole, grant_sink_role
from tickwire.sinks.postgres import TableWriter

pytestmark = pytest.mark.integration


async def test_sink_role_writes_rows_but_cannot_change_the_schema(isolated):
    owner = await asyncpg.connect(**isolated.pg_options())
    role, password = "sink_" + uuid.uuid4().hex[:8], uuid.uuid4().hex
    await owner.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")  # test-made identifiers only
    try:
        with pytest.raises(UnknownRole):
            await grant_sink_role(owner, "no_such_role_x")
        await grant_sink_role(owner, role)
        host = isolated.pg_dsn.split("@", 1)[1]
        sink = await asyncpg.connect(f"postgresql://{role}@{host}", password=password)
        try:
            writer = TableWriter(MARKET_CONDITIONS)
            await writer.prepare(sink)
            row = Condition(symbol="ROLE", timeframe="1m", timestamp=datetime(2026, 1, 2, tzinfo=timezone.utc),
                            open=1.0, high=1.0, low=1.0, close=1.0, volume=1)
            daily = msgspec.structs.replace(row, timeframe="1d")  # stored in market_conditions_daily
            assert await writer.write(sink, [msgspec.structs.astuple(row), msgspec.structs.astuple(daily)]) == 2
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await sink.execute("DROP TABLE market_conditions_intraday")
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await sink.execute("CREATE TABLE sneaky (x int)")
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await sink.execute("DELETE FROM market_conditions_intraday")
            # The audit trail takes rows, twice over idempotently, and never changes one.
            audit = TableWriter(EXECUTION_AUDIT)
            await audit.prepare(sink)
            entry = AuditRow(source_topic="exec.fills.v1", source_partition=0, source_offset=7, kind="FILL", subject="f-1",
                             ts=datetime(2026, 1, 2, tzinfo=timezone.utc), portfolio_id="P1", symbol="ROLE", payload={"a": 1})
            assert await audit.write(sink, [msgspec.structs.astuple(entry)]) == 1
            assert await audit.write(sink, [msgspec.structs.astuple(entry)]) == 0
            for change in ("UPDATE execution_audit SET subject = 'x'", "DELETE FROM execution_audit"):
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await sink.execute(change)
        finally:
            await sink.close()
    finally:
        await owner.execute(f"REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {role}")
        await owner.execute(f"REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM {role}")
        await owner.execute(f"DROP OWNED BY {role}")
        await owner.execute(f"DROP ROLE {role}")
        await owner.close()
