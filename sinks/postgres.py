"""Batch writes into PostgreSQL/TimescaleDB: binary COPY into a staging table, then merge.

One transaction per batch; rows are de-duplicated on the table's key inside the batch
and merged with ``ON CONFLICT`` so a replayed batch changes nothing (DESIGN rule 3).
A batch of new rows (the usual case) is inserted without ``ON CONFLICT``, which costs
PostgreSQL a third less per row; a key already in the table makes that insert fail,
and the batch is merged instead. All SQL here is built from the table contract's
identifiers, never from data. A table contract that names a view (``market_conditions``)
says which table each row is stored in (``Table.stored_in``): one statement writes them all.

A table with an ``owner`` column refuses a row whose id (its key without the time
column) the table holds for another owner within ``OWNER_WINDOW`` of the row's time
(``ConflictingKey``): the consumer isolates such rows and dead-letters them, as it does
rows the database refuses. The window keeps the check to the chunks or partitions of the
batch's times, not every one since the table began.
"""

from __future__ import annotations

import operator

import asyncpg
import msgspec

from tickwire.schemas.tables import Table
from tickwire.sinks.errors import ConflictingKey

_json = msgspec.json.Encoder()
# After a batch met keys already in the table, this many batches are merged straight away:
# a writer of updates (the correlation context, predictions being validated) fails the
# plain insert nearly every time, and each failure costs a COPY and an insert.
_MERGES_AFTER_CONFLICT = 100
OWNER_WINDOW = "7 days"


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class TableWriter:
    """Writes batches of row tuples (in ``table.columns`` order) into one table."""

    def __init__(self, table: Table) -> None:
        self.table = table
        # Per row type: two writers of one table may share a pooled connection.
        self.staging = f"_stage_{table.name}_{table.record.__name__.lower()}"
        cols = ", ".join(_ident(c) for c in table.columns)
        key = ", ".join(_ident(c) for c in table.key)
        self.create_staging_sql = (
            f"CREATE TEMP TABLE IF NOT EXISTS {_ident(self.staging)} ("
            + ", ".join(f"{_ident(c)} {t}" for c, t in zip(table.columns, table.staging_types))
            + ") ON COMMIT DELETE ROWS"
        )

        def action(target: str) -> str:
            if table.on_conflict == "nothing":
                return "DO NOTHING"
            updated = [_ident(c) for c in table.updated]
            sql = f"DO UPDATE SET {', '.join(f'{c} = EXCLUDED.{c}' for c in updated)}"
            # A replayed row changes nothing: no new row version, and it is not counted as written.
            sql += (
                f" WHERE ({', '.join(f'{_ident(target)}.{c}' for c in updated)}) IS DISTINCT FROM"
                f" ({', '.join(f'EXCLUDED.{c}' for c in updated)})"
            )
            return sql + (f" AND {table.update_where}" if table.update_where else "")

        # One statement whatever the number of tables a row may go to (one data-modifying
        # CTE each). Both run as queries (the merge counts its rows rather than reading the
        # command tag): a query goes through asyncpg's statement cache, so each connection
        # plans them once, not per batch.
        inserts = [
            f"INSERT INTO {_ident(target)} ({cols}) SELECT {cols} FROM {_ident(self.staging)}" + (f" WHERE {where}" if where else "")
            for target, where in table.targets
        ]
        merges = [
            f"m{n} AS ({insert} ON CONFLICT ({key}) {action(target)} RETURNING 1)"
            for n, (insert, (target, _)) in enumerate(zip(inserts, table.targets))
        ]
        counts = " + ".join(f"(SELECT count(*) FROM m{n})" for n in range(len(merges)))
        self.merge_sql = f"WITH {', '.join(merges)} SELECT {counts}"
        self.owner_conflict_sql = None
        self._owner_index = None
        if table.owner:
            owner, staging, time = _ident(table.owner), _ident(self.staging), _ident(table.time_column)
            ids = [c for c in table.key if c != table.time_column]
            self.id_of = operator.itemgetter(*(table.columns.index(c) for c in ids))
            joined = " AND ".join(f"t.{_ident(c)} = s.{_ident(c)}" for c in ids)
            self.owner_conflict_sql = (
                f"SELECT s.{owner} AS row_owner, t.{owner} AS stored_owner FROM {staging} s"
                f" JOIN {_ident(table.name)} t ON {joined} WHERE t.{owner} IS DISTINCT FROM s.{owner}"
                f" AND t.{time} BETWEEN (SELECT min({time}) FROM {staging}) - interval '{OWNER_WINDOW}'"
                f" AND (SELECT max({time}) FROM {staging}) + interval '{OWNER_WINDOW}' LIMIT 1"
            )
            self._owner_index = table.columns.index(table.owner)
        self.insert_sql = f"WITH {', '.join(f'i{n} AS ({insert})' for n, insert in enumerate(inserts))} SELECT 0"
        self._merges_due = 0
        self.columns = table.columns  # computed from the Struct's fields on every access
        self._key_index = [table.columns.index(c) for c in table.key]
        # A row's key (a tuple, or the value itself for a one-column key), in C.
        self.key_of = operator.itemgetter(*self._key_index)
        # COPY takes jsonb as text: these columns are encoded on the way in.
        self._json_index = [i for i, t in enumerate(table.staging_types) if t == "jsonb"]

    async def prepare(self, conn: asyncpg.Connection) -> None:
        """Create this connection's staging table (pool ``init`` hook)."""
        await conn.execute(self.create_staging_sql)

    def dedupe(self, rows: list[tuple]) -> list[tuple]:
        """Last row wins per key: ``ON CONFLICT DO UPDATE`` may not touch a row twice."""
        if self._owner_index is not None:
            owners: dict = {}
            for row in rows:
                if owners.setdefault(self.id_of(row), row[self._owner_index]) != row[self._owner_index]:
                    raise ConflictingKey(f"id {self.id_of(row)} comes from two {self.table.owner}s in one batch")
        deduped = dict(zip(map(self.key_of, rows), rows))
        return rows if len(deduped) == len(rows) else list(deduped.values())

    async def write(self, conn: asyncpg.Connection, rows: list[tuple]) -> int:
        """Write ``rows`` in one transaction; return how many rows were inserted or updated."""
        rows = self.dedupe(rows)
        if self._json_index:
            rows = [self._encode_json(row) for row in rows]
        if self._merges_due:
            self._merges_due -= 1
        else:
            try:
                async with conn.transaction():
                    await self._stage(conn, rows)
                    await conn.fetchval(self.insert_sql)
                return len(rows)
            except asyncpg.UniqueViolationError:
                self._merges_due = _MERGES_AFTER_CONFLICT
        async with conn.transaction():
            await self._stage(conn, rows)
            return await conn.fetchval(self.merge_sql)

    async def _stage(self, conn: asyncpg.Connection, rows: list[tuple]) -> None:
        await conn.copy_records_to_table(self.staging, records=rows, columns=self.columns)
        if self.owner_conflict_sql and (clash := await conn.fetchrow(self.owner_conflict_sql)):
            raise ConflictingKey(
                f"a row of {self.table.owner} {clash['row_owner']} has the id of a row stored for {clash['stored_owner']}"
            )

    def _encode_json(self, row: tuple) -> tuple:
        values = list(row)
        for i in self._json_index:
            if values[i] is not None:
                values[i] = _json.encode(values[i]).decode()
        return tuple(values)
