"""cryptofeed's trades and candles as Tickwire's ``md.trades.v1`` and ``md.bars.v1`` messages.

For a producer that already runs cryptofeed (https://github.com/bmoscon/cryptofeed): its
``TRADES`` and ``CANDLES`` callbacks hand objects to ``trade()`` and ``bar()``, and the
results go onto the topics (``msgspec.json.encode``, keyed by symbol). Nothing here imports
cryptofeed: any object with its attribute names will do.

What the v1 contract asks, and how the mapping meets it:

- Symbols are at most 10 characters of ``A-Z 0-9 . - / ^`` (seed 001's ``VARCHAR(10)``, the
  column every table and aggregate is keyed on), and v1 has no venue field. cryptofeed's
  ``BTC-USDT`` passes as it is; ``BTC-USDT-PERP`` (13) and one pair on two venues need a
  symbol map, ``"EXCHANGE:SYMBOL"`` or ``"SYMBOL"`` -> Tickwire symbol (``{"BINANCE_FUTURES:
  BTC-USDT-PERP": "BTCUSDT.P"}``): the venue, where it matters, is part of the symbol.
- Sizes and volumes are whole units (a bar's volume is a ``BIGINT``): cryptofeed's decimal
  amounts are counted in ``lot`` (1e-8 by default, a satoshi), ``round(amount / lot)``.
- Times are UTC datetimes; cryptofeed's are float seconds. A candle's time is its start.
- Timeframes are ``N[mhd]``: cryptofeed's ``1w`` is ``7d``; ``1M`` (calendar months) has no
  equivalent and is refused. An open candle (``closed`` false) is not a bar yet: ``None``.
- ``side`` is not part of ``md.trades.v1`` and is dropped.
"""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal
from typing import Any, Mapping

import msgspec

from tickwire.schemas.market import Bar
from tickwire.schemas.trades import Trade

SATOSHI = Decimal("1e-8")
_INTERVALS = {"1w": "7d"}


class FeedError(ValueError):
    """A cryptofeed object the v1 contract cannot take; the message says which field and why."""


def trade(obj: Any, symbols: Mapping[str, str] | None = None, lot: Decimal = SATOSHI) -> Trade:
    """cryptofeed ``Trade`` -> ``md.trades.v1``."""
    return _checked(Trade, {
        "symbol": symbol(obj, symbols), "ts": _time(obj.timestamp), "price": float(obj.price),
        "size": _lots(obj.amount, lot, "amount"), "trade_id": str(obj.id),
    })


def bar(obj: Any, symbols: Mapping[str, str] | None = None, lot: Decimal = SATOSHI) -> Bar | None:
    """cryptofeed ``Candle`` -> ``md.bars.v1``; ``None`` while the candle is still open."""
    if not obj.closed:
        return None
    if obj.interval == "1M":
        raise FeedError("interval 1M: calendar months have no timeframe (N minutes, hours or days)")
    return _checked(Bar, {
        "symbol": symbol(obj, symbols), "ts": _time(obj.start), "timeframe": _INTERVALS.get(obj.interval, obj.interval),
        "open": float(obj.open), "high": float(obj.high), "low": float(obj.low), "close": float(obj.close),
        "volume": _lots(obj.volume, lot, "volume"), "trade_count": obj.trades, "source": "feed",
    })


def symbol(obj: Any, symbols: Mapping[str, str] | None = None) -> str:
    """The Tickwire symbol of an object's ``exchange`` and ``symbol``: the map's entry for
    ``"EXCHANGE:SYMBOL"``, else for ``"SYMBOL"``, else the symbol itself."""
    symbols = symbols or {}
    return symbols.get(f"{obj.exchange}:{obj.symbol}") or symbols.get(obj.symbol) or obj.symbol


def _time(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, timezone.utc)


def _lots(amount: Any, lot: Decimal, name: str) -> int:
    lots = Decimal(str(amount)) / lot
    if lots != lots.to_integral_value():
        raise FeedError(f"{name} {amount} is not a whole number of lots of {lot}")
    return int(lots)


def _checked(kind: type, fields: dict) -> Any:
    try:
        return msgspec.convert(fields, kind)
    except msgspec.ValidationError as exc:
        hint = " (map it to at most 10 characters: see schemas/cryptofeed.py)" if "symbol" in str(exc) else ""
        raise FeedError(f"{exc}{hint}") from None
