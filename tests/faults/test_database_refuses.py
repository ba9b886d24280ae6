"""The database says no, for each reason a production server gives: the disk full, the
lock table exhausted ("out of shared memory"), a deadlock, a read-only server (a standby
before the failover promotes it, or one demoted under the sink). Each is transient: the
sink retries with backoff, goes unready and counts its retries while it lasts, writes
nothing to the DLQ, and once the database takes writes again every row lands, once.

The errors are the server's own: a trigger raises the SQLSTATE the server would, and the
read-only case is the real thing (``default_transaction_read_only`` and the sink's
connections ended, as a failover does).
"""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from tickwire.schemas.topics import CONDITIONS
from tickwire.streams.topics import ensure_topics
from tests.conftest import Processes, wait_for
from tests.faults.test_slow_database import _drained, conditions, publish
from tests.integration.test_pipeline import sample, scrape

pytestmark = pytest.mark.integration
REFUSED_S = 8


async def refuse_with(conn: asyncpg.Connection, sqlstate: str) -> None:
    await conn.execute(
        f"""CREATE OR REPLACE FUNCTION tickwire_test_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN RAISE EXCEPTION 'the test refuses writes' USING ERRCODE = '{sqlstate}'; END $$"""
    )
    await conn.execute(
        "CREATE TRIGGER tickwire_test_refuse BEFORE INSERT OR UPDATE ON market_conditions_intraday"
        " FOR EACH ROW EXECUTE FUNCTION tickwire_test_refuse()"
    )


async def accept_again(conn: asyncpg.Connection) -> None:
    await conn.execute("DROP TRIGGER tickwire_test_refuse ON market_conditions_intraday")


async def read_only(conn: asyncpg.Connection, on: bool) -> None:
    await conn.execute("SET default_transaction_read_only = off")  # this session's own, to change it back
    database = await conn.fetchval("SELECT current_database()")
    await conn.execute(f'ALTER DATABASE "{database}" SET default_transaction_read_only = {"on" if on else "off"}')
    # as a failover does: the sink's sessions end, and its new ones see the new setting
    await conn.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()", database
    )


@pytest.mark.parametrize("refusal", ["53100", "53200", "40P01", "read_only"])
async def test_a_database_refusing_writes_makes_the_sink_wait_unready_then_land_every_row(isolated, refusal, tmp_path):
    await ensure_topics(isolated)
    processes = Processes(isolated, tmp_path)  # one sink per case: each case's rows are its sink's
    conn = await asyncpg.connect(**isolated.pg_options())
    try:
        _, port = processes.start("sink", "--tables", "market_conditions")
        count = lambda: conn.fetchval("SELECT count(*) FROM market_conditions")  # noqa: E731
        before = await count()  # the module's database: the cases before this one wrote theirs
        await publish(isolated, conditions(1_000, offset=before))
        assert await wait_for(lambda: _equals(count, before + 1_000), timeout_s=60, check=processes.check_alive)

        if refusal == "read_only":
            await read_only(conn, True)
            await conn.close()
            conn = await asyncpg.connect(**isolated.pg_options())  # ours ended too
        else:
            await refuse_with(conn, refusal)
        await publish(isolated, conditions(1_000, offset=before + 1_000))

        async def waiting() -> bool:
            metrics = scrape(port)
            return sample(metrics, "tickwire_db_retries_total", table="market_conditions") > 0 and sample(metrics, "tickwire_ready") == 0

        assert await wait_for(waiting, timeout_s=60, check=processes.check_alive)
        await asyncio.sleep(REFUSED_S)  # retried with backoff, still up, still unready, nothing written
        processes.check_alive()
        assert sample(scrape(port), "tickwire_ready") == 0 and await count() == before + 1_000

        if refusal == "read_only":
            await read_only(conn, False)
            await conn.close()
            conn = await asyncpg.connect(**isolated.pg_options())
        else:
            await accept_again(conn)
        assert await wait_for(lambda: _equals(count, before + 2_000), timeout_s=120, check=processes.check_alive)
        assert await wait_for(lambda: asyncio.sleep(0, sample(scrape(port), "tickwire_ready") == 1), timeout_s=30)
        metrics = scrape(port)
        assert not [k for k, v in metrics.items() if k[0] == "tickwire_dlq_messages_total" and v], "rows went to the DLQ"
        assert sample(metrics, "tickwire_rows_written_total", table="market_conditions") == 2_000
        assert await wait_for(lambda: _drained(port, isolated.topic(CONDITIONS.name)), timeout_s=30)  # every offset committed
    finally:
        if refusal == "read_only" and not conn.is_closed():
            await read_only(conn, False)
        await conn.close()
        processes.stop()


async def _equals(count, n: int) -> bool:
    return await count() == n
