"""The one exception root of Tickwire's contracts."""

from __future__ import annotations


class TickwireError(Exception):
    """Root of every error Tickwire raises on purpose; the command line reports its message
    (never a traceback) and exits non-zero."""


class UsageError(TickwireError):
    """A command's arguments cannot be used; the command line exits 2, as for argparse's own errors."""


class Unreachable(TickwireError):
    """Kafka or PostgreSQL cannot be reached, or refused us; the message names which and where."""


class InvalidMessage(TickwireError):
    """A message that cannot be accepted: it goes to the DLQ with ``reason`` and ``detail``.

    ``reason`` is one of ``REASONS``, a short fixed vocabulary safe as a metric label;
    ``detail`` is the human explanation (never containing secrets).
    """

    def __init__(self, reason: str, detail: str) -> None:
        if reason not in REASONS:
            raise ValueError(f"unknown DLQ reason {reason!r}")
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


REASONS = frozenset(
    {
        "empty",  # zero-length value
        "too_large",  # above max_message_bytes
        "not_utf8",
        "not_json",
        "schema",  # wrong types, missing or unknown fields
        "invalid_value",  # parsed, but a value breaks a rule (prices, OHLC order, symbol ...)
        "bad_timestamp",  # before 1970, too far ahead, naive
        "out_of_order",  # event time behind what the key already saw
        "late_bar",  # a bar older than the last one of its (symbol, timeframe)
        "conflicting_duplicate",  # a bar of a (symbol, timeframe, time) already applied, with other values
        "conflicting_source",  # a feed's bar of a (symbol, timeframe) the worker resamples, or the reverse
        "unknown_version",
        "database_rejected",  # a sink's database refused the row (data error)
        "conflicting_id",  # a prediction or trade id (with its time) a sink already stored for another symbol
        "unknown_portfolio",  # an order or fill of a portfolio the configuration does not list
        "unknown_order",  # a fill naming no order the worker knows, where orders are required
        "order_state",  # an order event or fill its order's state forbids (a fill after a cancel ...)
        "overfill",  # a fill past its order's quantity
        "unknown_trade",  # a sizing or exit decision naming a trade that was not open at its time
        "internal",  # a stage failed on the message (a bug): kept in the DLQ, the stream goes on
    }
)
