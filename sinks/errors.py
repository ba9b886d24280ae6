"""Database errors classified by SQLSTATE class, never by message text."""

from __future__ import annotations

import asyncpg

# Connection exception, invalid transaction state (25006: read-only, as a standby is until a
# failover promotes it), transaction rollback, insufficient resources, operator intervention.
_RETRIABLE_CLASSES = {"08", "25", "40", "53", "57"}
# Data exception, integrity constraint violation: the rows are bad, retrying cannot help.
_DATA_CLASSES = {"22", "23"}


# Rows the client cannot encode (a number beyond its column's type): the row's fault, as a
# data exception is. asyncpg's client-side DataError is an InterfaceError, so this goes first.
_CLIENT_DATA_ERRORS = (asyncpg.exceptions._base.DataError, OverflowError)


class ConflictingKey(Exception):
    """A row whose key the table holds for another owner (``Table.owner``): the row's fault."""

    reason = "conflicting_id"


def is_retriable(exc: BaseException) -> bool:
    """A transient failure: retry the same batch later."""
    if isinstance(exc, (*_CLIENT_DATA_ERRORS, ConflictingKey)):
        return False
    # InternalClientError: the driver lost track of a connection's protocol state (seen when the
    # server goes away mid-commit); the pool discards that connection and a retry takes another.
    if isinstance(exc, (OSError, ConnectionError, asyncpg.InterfaceError, asyncpg.exceptions.InternalClientError)):
        return True
    sqlstate = getattr(exc, "sqlstate", None)
    return isinstance(sqlstate, str) and sqlstate[:2] in _RETRIABLE_CLASSES


def is_data_error(exc: BaseException) -> bool:
    """Some row in the batch breaks a type or constraint, or cannot be encoded: isolate it."""
    if isinstance(exc, (*_CLIENT_DATA_ERRORS, ConflictingKey)):
        return True
    sqlstate = getattr(exc, "sqlstate", None)
    return isinstance(sqlstate, str) and sqlstate[:2] in _DATA_CLASSES
