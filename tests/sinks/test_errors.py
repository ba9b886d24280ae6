import asyncpg

from tickwire.sinks.errors import is_data_error, is_retriable


def test_retriable_by_sqlstate_class_not_by_text():
    assert is_retriable(asyncpg.exceptions.SerializationError("x"))
    assert is_retriable(asyncpg.exceptions.DeadlockDetectedError("x"))
    assert is_retriable(asyncpg.exceptions.TooManyConnectionsError("x"))
    assert is_retriable(asyncpg.exceptions.AdminShutdownError("x"))
    assert is_retriable(ConnectionResetError())
    assert is_retriable(asyncpg.exceptions.InternalClientError("cannot switch to state 15"))
    assert not is_retriable(asyncpg.exceptions.NumericValueOutOfRangeError("x"))


def test_data_errors_are_isolated_not_retried():
    assert is_data_error(asyncpg.exceptions.NumericValueOutOfRangeError("x"))
    assert is_data_error(asyncpg.exceptions.CheckViolationError("x"))
    assert not is_data_error(asyncpg.exceptions.SerializationError("x"))


def test_a_row_the_client_cannot_encode_is_isolated_and_a_read_only_server_is_waited_out():
    too_big = asyncpg.exceptions._base.DataError("invalid input for query argument $7: 18446744073709551615 (value out of int64 range)")
    for exc in (too_big, OverflowError("int too big to convert")):
        assert is_data_error(exc) and not is_retriable(exc)
    assert is_retriable(asyncpg.exceptions.ReadOnlySQLTransactionError("cannot execute INSERT in a read-only transaction"))
