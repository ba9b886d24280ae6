"""cryptofeed's objects (their attribute names and types, cryptofeed/types.pyx) onto Tickwire's v1 topics."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal
from types import SimpleNamespace

import msgspec
import pytest

from tickwire.schemas.cryptofeed import FeedError, bar, trade
from tickwire.schemas.market import Bar
from tickwire.schemas.trades import Trade

T = 1_764_855_000.25  # cryptofeed's float seconds
NOW = datetime.fromtimestamp(T + 60, timezone.utc)


def cf_trade(**fields) -> SimpleNamespace:
    return SimpleNamespace(**{"exchange": "COINBASE", "symbol": "BTC-USD", "side": "buy", "amount": Decimal("0.01500000"),
                              "price": Decimal("91234.56"), "timestamp": T, "id": "684123", "type": None, "raw": {}} | fields)


def cf_candle(**fields) -> SimpleNamespace:
    return SimpleNamespace(**{"exchange": "BINANCE", "symbol": "ETH-USDT", "start": 1_764_854_940.0, "stop": 1_764_854_999.999,
                              "interval": "1m", "trades": 812, "open": Decimal("3050.1"), "close": Decimal("3051.9"),
                              "high": Decimal("3052.0"), "low": Decimal("3049.8"), "volume": Decimal("123.45678"),
                              "closed": True, "timestamp": T, "raw": {}} | fields)


def test_a_trade_and_a_closed_candle_become_valid_v1_messages_that_the_topics_decode():
    t = trade(cf_trade())
    assert t == Trade(symbol="BTC-USD", ts=datetime.fromtimestamp(T, timezone.utc), price=91234.56, size=1_500_000, trade_id="684123")
    b = bar(cf_candle())
    assert (b.symbol, b.timeframe, b.ts, b.volume, b.trade_count) == (
        "ETH-USDT", "1m", datetime(2025, 12, 4, 13, 29, tzinfo=timezone.utc), 12_345_678_000, 812)
    for message, kind in ((t, Trade), (b, Bar)):  # as the worker reads them off the topic
        decoded = msgspec.json.decode(msgspec.json.encode(message), type=kind)
        assert decoded == message and decoded.validate(now=NOW, max_future_skew_s=5) == message


def test_long_or_venue_specific_symbols_go_through_the_symbol_map():
    perp = cf_candle(exchange="BINANCE_FUTURES", symbol="BTC-USDT-PERP")
    with pytest.raises(FeedError, match="symbol.*at most 10 characters"):
        bar(perp)
    assert bar(perp, {"BINANCE_FUTURES:BTC-USDT-PERP": "BTCUSDT.P"}).symbol == "BTCUSDT.P"
    assert trade(cf_trade(exchange="KRAKEN"), {"KRAKEN:BTC-USD": "BTC-USD.K"}).symbol == "BTC-USD.K"
    assert trade(cf_trade(), {"BTC-USD": "XBT"}).symbol == "XBT"  # any venue


def test_what_v1_cannot_take_is_refused_with_the_field_named():
    assert bar(cf_candle(closed=False)) is None  # still forming
    assert bar(cf_candle(interval="1w")).timeframe == "7d"
    with pytest.raises(FeedError, match="1M"):
        bar(cf_candle(interval="1M"))
    with pytest.raises(FeedError, match="amount 1E-9 is not a whole number of lots"):
        trade(cf_trade(amount=Decimal("1E-9")))
    assert trade(cf_trade(amount=Decimal("7")), lot=Decimal(1)).size == 7  # shares: lots of one
    with pytest.raises(FeedError, match="price"):
        trade(cf_trade(price=Decimal("0")))
