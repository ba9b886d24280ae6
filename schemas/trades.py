"""Raw trades (``md.trades.v1``): one print per message, aggregated into bars by ``streams.candles``."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Annotated

import msgspec

from tickwire.schemas.errors import InvalidMessage
from tickwire.schemas.market import MAX_VOLUME, Price, Symbol, UtcDatetime, check_timestamp

# Whole units (shares, contracts, lots): bar volume is an integer, so a fractional size
# could not be summed into it without rounding. Feeds with fractional sizes send them
# in their smallest lot.
Size = Annotated[int, msgspec.Meta(gt=0, le=MAX_VOLUME)]  # a bar's volume sums its trades' sizes
TradeId = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[\x21-\x7e]+\Z")]


class Trade(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One trade; ``ts`` is its event time in UTC, ``trade_id`` unique per symbol.

    Unknown fields are rejected, as for ``Bar``: new fields mean ``md.trades.v2``.
    """

    symbol: Symbol
    ts: UtcDatetime
    price: Price
    size: Size
    trade_id: TradeId

    def validate(self, *, now: datetime, max_future_skew_s: float) -> "Trade":
        """Rules msgspec's field constraints cannot say; raise ``InvalidMessage``."""
        check_timestamp(self.ts, now=now, max_future_skew_s=max_future_skew_s)
        if not math.isfinite(self.price):
            raise InvalidMessage("invalid_value", "price is not finite")
        return self
