"""One (symbol, timeframe) per bar: its indicators and its regime in one compiled call.

``FrameCore.update`` gives what ``Indicators.update`` and then ``RegimeDetector.update``
give, to the bit, for the cost of one crossing into compiled code: one numba kernel
runs both modules' steps over the two states' bytes and writes the values into reused
bytes, read back as one tuple. A ``RegimeReading`` is built only for a bar that changes
the regime. Building a core only keeps references, so the worker builds one from a
frame's states for every bar.
"""

from __future__ import annotations

import struct
from datetime import datetime, timezone

import numpy as np
from numba import njit, types

from tickwire.schemas.market import Bar
from tickwire.streams.indicators import KEYS, STATE_SIZE, IndicatorState, nan_for_none
from tickwire.streams.indicators import step as indicator_step
from tickwire.streams.regimes import CHANGED, CODES, REGIMES, RegimeConfig, RegimeReading, RegimeState, changed_reading, compiled_config, laid_out, lay_out, rule

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
# The shared float64s of one configuration: the values the call wrote (``KEYS`` order,
# NaN for None), then the regime config.
_VALUES = len(KEYS)
_CFG = _VALUES
# Where the values ``rule`` reads are, as ints the kernel compiles in.
_EMA_20, _VOLATILITY_20D, _ADX_14, _PLUS_DI_14, _MINUS_DI_14 = (
    KEYS.index(key) for key in ("ema_20", "volatility_20d", "adx_14", "plus_di_14", "minus_di_14"))
_WITH_NAN = 16  # added to the returned code when one of the values is NaN
_CODES_END = CHANGED + len(REGIMES)  # ``rule``'s codes are -1 .. _CODES_END - 1
_NOT_LAID_OUT = -2  # the regime state must be laid out for the config: nothing was changed
_INVALID = -3  # the indicator state is not a whole array or its anchor is not positive: nothing was changed

_DATA = types.ByteArray(types.uint8, 1, "C")
_F = types.float64
_I = types.int64


@njit((_DATA, _DATA, _DATA, _I, _I, _I, _I, _F, _F, _F, _F, types.optional(_F), _I, _I), cache=True)
def _bar(indicators, regime, shared, held, days, seconds, microseconds, h, l, c, volume, vwap, anchor_s, offset_s):
    """Both steps of one bar: writes the values into ``shared``, returns the regime
    kernel's (code, confidence), the code plus ``_WITH_NAN`` if a value is NaN, or one of
    the codes above."""
    if len(indicators) != 8 * STATE_SIZE or anchor_s <= 0:
        return _INVALID, np.nan
    out = np.frombuffer(shared, np.float64)
    cfg = out[_CFG:]
    if not laid_out(regime, cfg):
        return _NOT_LAID_OUT, np.nan
    ts_us = (days * 86_400 + seconds) * 1_000_000 + microseconds
    values = indicator_step(np.frombuffer(indicators, np.float64), ts_us, h, l, c, volume, nan_for_none(vwap),
                            anchor_s * 1_000_000, offset_s * 1_000_000)
    nan = 0
    for k in range(_VALUES):
        x = values[k]
        out[k] = x
        if x != x:
            nan = _WITH_NAN
    code, confidence = rule(regime, cfg, held, values[_EMA_20], values[_VOLATILITY_20D], values[_ADX_14], values[_PLUS_DI_14],
                             values[_MINUS_DI_14])
    return code + nan, confidence


# The compiled function itself: the dispatcher's type matching would cost more than the bar.
_BAR = _bar.overloads[_bar.signatures[0]].entry_point
_VALUES_OF = struct.Struct(f"{_VALUES}d").unpack_from  # one tuple of floats: cheaper than a numpy .tolist()
_SHARED: dict[int, tuple[RegimeConfig, bytearray, np.ndarray, dict[str, float | int]]] = {}


def _share(config: RegimeConfig) -> tuple[RegimeConfig, bytearray, np.ndarray, dict[str, float | int]]:
    """(config, the kernel's shared bytes for it, the regime kernel's view of it, its
    ``as_details``), cached by identity like ``streams.regimes``. The values are read
    right after each call, so the cores of one configuration share them."""
    if len(_SHARED) >= 64:
        _SHARED.clear()
    _, cfg, details = compiled_config(config)
    shared = bytearray(np.concatenate([np.zeros(_CFG), cfg]).tobytes())
    cached = _SHARED[id(config)] = config, shared, cfg, details
    return cached


class FrameCore:
    """The indicators and regime of one (symbol, timeframe), over its two states."""

    __slots__ = ("config", "indicators", "regime", "_shared")

    def __init__(self, config: RegimeConfig, indicators: IndicatorState, regime: RegimeState) -> None:
        """Cheap: ``update`` checks the rest of what the kernel needs of the states."""
        # The kernel writes into these bytes: they must be writable (numba takes bytes too).
        if type(indicators.data) is not bytearray or type(regime.data) is not bytearray:
            raise ValueError("IndicatorState.data and RegimeState.data must be bytearrays")
        self.config = config
        self.indicators = indicators
        self.regime = regime
        shared = _SHARED.get(id(config))
        self._shared = shared if shared is not None and shared[0] is config else _share(config)

    def update(self, bar: Bar) -> tuple[tuple[float | None, ...], str | None, float | None, RegimeReading | None]:
        """One closed bar in; (its ``Indicators.update`` values in ``KEYS`` order, the
        regime held and its confidence, the ``RegimeDetector.update`` reading if the
        regime changed on this bar)."""
        ind, reg = self.indicators, self.regime
        _, shared, cfg, details = self._shared
        t = bar.ts - _EPOCH
        code, confidence = _BAR(ind.data, reg.data, shared, CODES[reg.regime], t.days, t.seconds, t.microseconds,
                                bar.high, bar.low, bar.close, bar.volume, bar.vwap, ind.vwap_anchor_s, ind.vwap_offset_s)
        values = _VALUES_OF(shared)
        if code >= _CODES_END:
            code -= _WITH_NAN
            values = tuple([None if x != x else x for x in values])
        if code < 0:
            if code == -1:
                return values, None, None, None
            if code == _NOT_LAID_OUT:
                lay_out(reg, self.config)
                return self.update(bar)
            raise ValueError(f"IndicatorState.data must be {8 * STATE_SIZE} bytes and vwap_anchor_s positive")
        if code < CHANGED:
            return values, REGIMES[code], confidence, None
        change = changed_reading(reg, cfg, details, bar.ts, bar.close, dict(zip(KEYS, values)), code, confidence)
        return values, change.regime, confidence, change
