import gzip
import importlib.metadata
import json

import msgspec
import numpy as np
import pandas as pd
import pytest
import talib

from datetime import date, datetime, timezone

from tickwire.schemas.correlations import (
    CorrelationAnalysis, CorrelationConflict, CorrelationEntry, CorrelationGroup, CorrelationGroupMember, CorrelationHistory,
    CorrelationMatrix, CorrelationRecord, CorrelationThreshold,
)
from tickwire.streams.correlations import (
    Context, ContextState, CorrelationConfig, Correlations, CorrelationState, analysis, load_sectors, threshold_in_force,
)

DAY_US = 86_400_000_000
SECTORS = {
    "AAPL": "tech", "AMD": "tech", "MSFT": "tech", "BAC": "fin", "JPM": "fin", "CVX": "energy", "XOM": "energy",
    "RRC": "energy", "JNJ": "health", "LLY": "health", "MRK": "health", "PFE": "health", "UNH": "health",
    "KO": "staples", "PEP": "staples", "PG": "staples", "WMT": "staples", "HD": "retail", "BBY": "retail", "GE": "industrial",
}


def sp500_daily(days: int) -> pd.DataFrame:
    """Real daily closes of 20 US stocks and the S&P 500 index (as SPY), shipped in skfolio's wheel."""
    files = {f.name: f.locate() for f in importlib.metadata.files("skfolio") if f.name.endswith(".csv.gz")}
    with gzip.open(files["sp500_dataset.csv.gz"]) as fh:
        stocks = pd.read_csv(fh, index_col="Date")
    with gzip.open(files["sp500_index.csv.gz"]) as fh:
        index = pd.read_csv(fh, index_col="Date")
    return stocks.join(index.rename(columns={"SP500": "SPY"}), how="inner").iloc[-days:].reset_index(drop=True)


def feed(core: Correlations, closes: pd.DataFrame) -> list:
    out = []
    for t, row in enumerate(closes.itertuples(index=False)):
        out += core.step(t * DAY_US, {s: v for s, v in zip(closes.columns, row) if v == v})
    return out


def feed_context(context: Context, closes: pd.DataFrame) -> list[dict]:
    """Each step's (benchmark, sector) correlations."""
    return [context.step({s: v for s, v in zip(closes.columns, row) if v == v}) for row in closes.itertuples(index=False)]


def reference_returns(closes: pd.DataFrame) -> pd.DataFrame:
    """Log returns between consecutive bars of each symbol, aligned by timestamp."""
    return pd.DataFrame({s: np.log(closes[s].dropna()).diff() for s in closes.columns}).reindex(closes.index)


def assert_matches_pandas(core: Correlations, closes: pd.DataFrame, window: int, min_common: int) -> int:
    """Compare the current matrix with pandas' rolling corr at the last row; return pairs checked."""
    ret = reference_returns(closes)
    names, corr, _ = core.matrix(window)
    tail = ret.iloc[-window:]
    ref = tail[names].corr(min_periods=min_common).to_numpy()
    roll = ret[names[0]].rolling(window, min_periods=min_common).corr(ret[names[1]]).iloc[-1]
    assert roll == pytest.approx(ref[0, 1], abs=1e-12, nan_ok=True)  # DataFrame.corr over the window == rolling corr
    iu = np.triu_indices(len(names), 1)
    ours, theirs = corr[iu], ref[iu]
    assert np.array_equal(np.isnan(ours), np.isnan(theirs))
    ok = ~np.isnan(theirs)
    assert np.max(np.abs(ours[ok] - theirs[ok]), initial=0.0) <= 1e-9
    return int(ok.sum())


def correlated_walks(n: int, rho: float, symbols: int, seed: int) -> pd.DataFrame:
    """Log-price random walks whose returns all share correlation ``rho``."""
    rng = np.random.default_rng(seed)
    common = rng.normal(0, 0.01, (n, 1))
    own = rng.normal(0, 0.01, (n, symbols))
    rets = np.sqrt(rho) * common + np.sqrt(1 - rho) * own
    return pd.DataFrame(100 * np.exp(np.cumsum(rets, axis=0)), columns=[f"W{i:02d}" for i in range(symbols)])


@pytest.mark.parametrize("window", [20, 60])
def test_real_daily_bars_match_pandas_and_talib(window):
    closes = sp500_daily(400)
    core = Correlations(CorrelationConfig(windows=(window,), min_common=10, recompute_every=50))
    checked = 0
    for t, row in enumerate(closes.itertuples(index=False)):
        core.step(t * DAY_US, dict(zip(closes.columns, row)))
        if t >= 5 and t % 37 == 0:
            checked += assert_matches_pandas(core, closes.iloc[: t + 1], window, 10)
    assert checked > 1000
    ret = reference_returns(closes)
    names, corr, counts = core.matrix(window)
    assert (counts[np.triu_indices(len(names), 1)] == window).all()
    for a, b in (("AAPL", "MSFT"), ("XOM", "CVX"), ("KO", "SPY")):
        ta = talib.CORREL(ret[a].to_numpy(), ret[b].to_numpy(), timeperiod=window)[-1]
        assert abs(corr[names.index(a), names.index(b)] - ta) <= 1e-9


def test_synthetic_walks_with_gaps_late_joiners_and_quiet_symbols_match_pandas():
    closes = correlated_walks(700, 0.6, 12, seed=5)
    rng = np.random.default_rng(9)
    closes = closes.mask(rng.random(closes.shape) < 0.07)  # missing bars everywhere
    closes.iloc[:250, 2] = np.nan  # joins late
    closes.iloc[400:, 3] = np.nan  # goes quiet for good
    closes.iloc[300:340, 4] = np.nan  # quiet for a while, then back
    core = Correlations(CorrelationConfig(windows=(20, 60), min_common=12, recompute_every=25))
    for t, row in enumerate(closes.itertuples(index=False)):
        core.step(t * DAY_US, {s: v for s, v in zip(closes.columns, row) if v == v})
        if t >= 25 and (t % 29 == 0 or t in (251, 262, 401, 470, 339, 345)):
            for w in (20, 60):
                assert_matches_pandas(core, closes.iloc[: t + 1], w, 12)
    names, _, _ = core.matrix(60)
    assert "W03" not in names and "W02" in names and "W04" in names


def test_known_correlation_is_recovered():
    closes = correlated_walks(3000, 0.8, 2, seed=11)
    core = Correlations(CorrelationConfig(windows=(60,), min_common=30, recompute_every=1000))
    values = []
    for t, row in enumerate(closes.itertuples(index=False)):
        core.step(t * DAY_US, dict(zip(closes.columns, row)))
        if t >= 60:
            values.append(core.matrix(60)[1][0, 1])
    # 3000 steps since the last exact recompute at most 1000 ago: drift stays below 1e-9.
    ret = reference_returns(closes)
    ref = ret["W00"].rolling(60).corr(ret["W01"]).iloc[60:].to_numpy()
    assert np.max(np.abs(np.array(values) - ref)) <= 1e-9
    assert abs(np.mean(values) - 0.8) < 0.02


def test_constant_series_is_none_without_warnings():
    closes = correlated_walks(80, 0.5, 3, seed=2)
    closes["FLAT"] = 50.0
    closes.loc[30:, "W02"] = 20.0  # flat returns (exactly 0) after a while
    config = CorrelationConfig(windows=(20,), min_common=5, benchmark="FLAT")
    core = Correlations(config)
    records = feed(core, closes)
    names, corr, _ = core.matrix(20)
    assert np.isnan(corr[names.index("FLAT")]).sum() == len(names)
    assert np.isnan(corr[names.index("W02"), names.index("W00")])
    assert not np.isnan(corr[names.index("W00"), names.index("W01")])
    last = [r for r in records if isinstance(r, CorrelationEntry) and r.timestamp == records[-1].timestamp]
    assert all(r.value is None for r in last if "FLAT" in (r.symbol_a, r.symbol_b))
    ctx = feed_context(Context(config, sectors={"W00": "x", "FLAT": "x"}), closes)[-1]
    assert ctx["W00"] == (None, None) and ctx["W01"][0] is None


def test_benchmark_and_sector_exclude_self_match_pandas():
    closes = sp500_daily(200)
    closes = closes.mask(np.random.default_rng(3).random(closes.shape) < 0.05)
    ctx = feed_context(Context(CorrelationConfig(windows=(20, 60), min_common=8), sectors=SECTORS), closes)[-1]
    ret = reference_returns(closes).iloc[-20:]  # the smallest window
    assert ctx
    for sym, (bench, sector) in ctx.items():
        ref_bench = ret[sym].corr(ret["SPY"], min_periods=8) if sym != "SPY" else 1.0
        assert bench == pytest.approx(ref_bench, abs=1e-9)
        if sym not in SECTORS or sum(v == SECTORS[sym] for v in SECTORS.values()) < 2:
            assert sector is None
            continue
        others = [s for s, v in SECTORS.items() if v == SECTORS[sym] and s != sym]
        sector_ret = ret[others].mean(axis=1, skipna=True)
        expected = ret[sym].corr(sector_ret, min_periods=8)
        assert (sector is None) == np.isnan(expected)
        if sector is not None:
            assert abs(sector - expected) <= 1e-9
    assert ctx["GE"][1] is None  # alone in its sector


def test_groups_and_threshold_events():
    rng = np.random.default_rng(4)
    n = 120
    base = rng.normal(0, 0.01, n)
    rets = {
        "A": base + rng.normal(0, 0.001, n), "B": base + rng.normal(0, 0.001, n), "C": base + rng.normal(0, 0.001, n),
        "X": rng.normal(0, 0.01, n), "Y": rng.normal(0, 0.01, n),
    }
    rets["C"][70:] = rng.normal(0, 0.01, 50)  # C decouples from A and B
    closes = pd.DataFrame({k: 100 * np.exp(np.cumsum(v)) for k, v in rets.items()})
    core = Correlations(CorrelationConfig(windows=(20,), min_common=10, threshold=0.8, snapshot_every=10))
    records = feed(core, closes)
    by_ts: dict = {}
    for r in records:
        if not isinstance(r, (CorrelationThreshold, CorrelationHistory)):  # a step's, not a snapshot's
            by_ts.setdefault(r.timestamp, []).append(r)
    first = by_ts[min(by_ts)]  # after 10 steps: 9 returns, below min_common: no values yet
    assert [type(r) for r in first].count(CorrelationEntry) == 10 and not any(isinstance(r, CorrelationGroup) for r in first)
    early = by_ts[sorted(by_ts)[2]]
    groups = [r for r in early if isinstance(r, CorrelationGroup)]
    members = [r.symbol for r in early if isinstance(r, CorrelationGroupMember)]
    assert len(groups) == 1 and groups[0].member_count == 3 and sorted(members) == ["A", "B", "C"]
    above = {(r.symbol_a, r.symbol_b) for rs in by_ts.values() for r in rs if isinstance(r, CorrelationConflict) and r.crossing == "above"}
    below = [r for rs in by_ts.values() for r in rs if isinstance(r, CorrelationConflict) and r.crossing == "below"]
    assert above == {("A", "B"), ("A", "C"), ("B", "C")}
    assert {(r.symbol_a, r.symbol_b) for r in below} == {("A", "C"), ("B", "C")}
    assert all(r.previous_value >= 0.8 and abs(r.value) < 0.8 for r in below)
    last = by_ts[max(by_ts)]
    assert [r.symbol for r in last if isinstance(r, CorrelationGroupMember)] == ["A", "B"]
    matrix = next(r for r in last if isinstance(r, CorrelationMatrix))
    assert matrix.symbol_count == 5 and matrix.pair_count == 10 and matrix.pairs_above_threshold == 1
    summary = next(r for r in last if isinstance(r, CorrelationAnalysis))
    values = {(r.symbol_a, r.symbol_b): r.value for r in last if isinstance(r, CorrelationEntry)}
    assert (summary.symbol_count, summary.pair_count, summary.group_count, summary.threshold) == (5, 10, 1, 0.8)
    assert (summary.mean_correlation, summary.stddev_correlation) == (matrix.mean_correlation, matrix.stddev_correlation)
    assert (summary.most_correlated_a, summary.most_correlated_b) == ("A", "B") == max(values, key=values.get)
    assert summary.least_correlated_value == min(values.values())


def test_context_restarts_from_its_serialized_state_to_identical_values():
    closes = correlated_walks(200, 0.4, 12, seed=9).rename(columns={"W11": "SPY"})
    closes = closes.mask(np.random.default_rng(2).random(closes.shape) < 0.1)
    cfg, sectors = CorrelationConfig(windows=(20, 60), min_common=8), {"W00": "a", "W01": "a", "W02": "a"}
    whole = feed_context(Context(cfg, sectors=sectors), closes)
    head = Context(cfg, sectors=sectors)
    values = feed_context(head, closes.iloc[:93])
    blob = msgspec.msgpack.encode(head.snapshot_state())
    tail = Context(cfg, msgspec.msgpack.decode(blob, type=ContextState), sectors=sectors)
    values += feed_context(tail, closes.iloc[93:])
    assert values == whole and any(v[0] is not None for v in whole[-1].values())


def test_context_is_linear_in_symbols_and_a_silent_symbol_gives_its_slot_up():
    cfg = CorrelationConfig(windows=(20,), min_common=10)
    context, rng = Context(cfg), np.random.default_rng(5)
    closes = {f"S{i:05d}": 100.0 for i in range(3_000)} | {"SPY": 100.0}
    for _ in range(25):
        market = rng.normal(0, 0.01)
        closes = {s: c * np.exp(market + rng.normal(0, 0.01)) for s, c in closes.items()}
        values = context.step(closes)
    assert len(values) == 3_001 and all(v[0] is not None for v in values.values())  # every symbol, not a universe
    per_symbol = len(msgspec.msgpack.encode(context.snapshot_state())) / 3_001
    assert per_symbol < 20 * 8 + 8 + 40, per_symbol  # its window of returns, its close, its name
    slots = len(context.state.symbols)
    del closes["S00000"]  # delisted: silent from now on
    for _ in range(2 * 20):
        closes = {s: c * np.exp(rng.normal(0, 0.01)) for s, c in closes.items()}
        context.step(closes)
    assert "S00000" not in context.state.symbols
    context.step(closes | {"NEW": 10.0})  # takes the freed slot: no growth
    assert len(context.state.symbols) == slots and "NEW" in context.state.symbols


def test_restart_from_serialized_state_gives_identical_output():
    closes = correlated_walks(260, 0.4, 15, seed=8)
    closes = closes.mask(np.random.default_rng(1).random(closes.shape) < 0.1)
    closes.iloc[:90, 5] = np.nan
    closes.iloc[120:, 6] = np.nan
    cfg = CorrelationConfig(windows=(20, 60), min_common=10, threshold=0.5, snapshot_every=3, recompute_every=16)
    whole = feed(Correlations(cfg), closes)
    head = Correlations(cfg)
    records = feed(head, closes.iloc[:141])
    blob = msgspec.msgpack.encode(head.snapshot_state())
    tail = Correlations(cfg, msgspec.msgpack.decode(blob, type=CorrelationState))
    for t, row in enumerate(closes.iloc[141:].itertuples(index=False), start=141):
        records += tail.step(t * DAY_US, {s: v for s, v in zip(closes.columns, row) if v == v})
    assert msgspec.msgpack.encode(records) == msgspec.msgpack.encode(whole)


def test_steps_close_in_event_order_and_keep_each_symbols_last_close():
    core = Correlations(CorrelationConfig(windows=(2,), min_common=2))
    core.step(1, {"A": 10.0, "B": 20.0})
    core.step(2, {"A": 11.0})
    core.step(3, {"B": 22.0})
    assert core.state.steps == 3 and core.state.timestamps == [1, 2, 3]
    with pytest.raises(ValueError):
        core.step(3, {"A": 12.0})  # not after the last step: the worker counts such a bar as late
    core.step(4, {"A": 12.0})
    assert core.snapshot_state().last_close == {"A": 12.0, "B": 22.0}
    assert core.matrix(2)[1].shape == (2, 2)


def test_records_decode_as_the_topic_union():
    core = Correlations(CorrelationConfig(windows=(3,), min_common=2, threshold=0.5))
    records = feed(core, correlated_walks(6, 0.9, 3, seed=1))
    raw = msgspec.json.encode(records)
    assert msgspec.json.decode(raw, type=list[CorrelationRecord]) == records
    assert [r["record"] for r in json.loads(raw)][:2] == ["threshold", "matrix"]  # the first step's threshold in force
    entry = next(r for r in records if isinstance(r, CorrelationEntry))
    assert [f.name for f in msgspec.structs.fields(entry)] == ["timeframe", "window_bars", "timestamp", "symbol_a", "symbol_b", "value", "common_bars"]


def test_sector_file_loader(tmp_path):
    good_csv = tmp_path / "s.csv"
    good_csv.write_text("symbol,sector\nAAPL,tech\n MSFT , tech\n")
    assert load_sectors(good_csv) == {"AAPL": "tech", "MSFT": "tech"}
    assert load_sectors("") == {}  # the setting left empty: no sectors
    good_json = tmp_path / "s.json"
    good_json.write_text('{"XOM": "energy"}')
    assert load_sectors(good_json) == {"XOM": "energy"}
    cases = {
        "a.csv": ("symbol,industry\nA,b\n", "missing column"),
        "b.csv": ("symbol,sector\nA,x\nA,y\n", "line 3: symbol 'A' listed twice"),
        "c.csv": ("symbol,sector\nA,\n", "line 2"),
        "d.json": ("[1, 2]", "expected an object"),
        "e.json": ('{"A": 1}', "non-empty strings"),
        "f.json": ('{"A": ', "invalid JSON"),
        "g.txt": ("A,b", "expected a .csv or .json"),
    }
    for name, (text, message) in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(ValueError, match=message):
            load_sectors(tmp_path / name)
    with pytest.raises(ValueError, match="No such file"):
        load_sectors(tmp_path / "missing.csv")


def test_config_is_checked():
    for bad in ({"windows": (1,)}, {"windows": (20,), "min_common": 21}, {"threshold": 0.0}, {"snapshot_every": 0},
                {"thresholds": (("sideways", 0.5),)}, {"thresholds": (("volatile", 0.5), ("volatile", 0.6))},
                {"thresholds": (("volatile", 1.5),)}):
        with pytest.raises(ValueError):
            CorrelationConfig(**bad)


def test_threshold_in_force_is_the_regimes_else_the_single_one():
    by_regime = {"volatile": 0.6, "trending_up": 0.75}
    assert threshold_in_force("volatile", by_regime, 0.7) == 0.6
    assert threshold_in_force("trending_up", by_regime, 0.7) == 0.75
    assert threshold_in_force("ranging", by_regime, 0.7) == 0.7  # no threshold of its own
    assert threshold_in_force(None, by_regime, 0.7) == 0.7  # no regime known
    assert threshold_in_force("volatile", {}, 0.7) == 0.7  # the setting left empty


def test_analysis_of_a_snapshot_by_hand():
    names = ["A", "B", "C"]
    ia, ib = np.array([0, 0, 1]), np.array([1, 2, 2])
    common = dict(timeframe="1h", window_bars=20, timestamp=datetime(2026, 1, 5, tzinfo=timezone.utc))
    # pairs AB 0.9, AC none, BC -0.3: mean 0.3, population std sqrt((0.6^2 + 0.6^2) / 2) = 0.6
    got = analysis(names, ia, ib, np.array([0.9, np.nan, -0.3]), 1, 0.6, "volatile", common)
    assert (got.symbol_count, got.pair_count, got.group_count, got.threshold, got.regime) == (3, 2, 1, 0.6, "volatile")
    assert got.mean_correlation == pytest.approx(0.3) and got.stddev_correlation == pytest.approx(0.6)
    assert (got.most_correlated_a, got.most_correlated_b, got.most_correlated_value) == ("A", "B", 0.9)
    assert (got.least_correlated_a, got.least_correlated_b, got.least_correlated_value) == ("B", "C", -0.3)
    tie = analysis(names, ia, ib, np.array([0.5, 0.5, 0.5]), 0, 0.7, None, common)  # the first pair in name order
    assert (tie.most_correlated_a, tie.most_correlated_b, tie.least_correlated_a, tie.least_correlated_b) == ("A", "B", "A", "B")
    assert tie.stddev_correlation == 0.0
    none = analysis(names, ia, ib, np.full(3, np.nan), 0, 0.7, None, common)
    assert none.pair_count == 0 and none.mean_correlation is None and none.most_correlated_a is None


HOUR_US = 3_600_000_000
DAY0 = 20_458 * DAY_US  # 2026-01-05, UTC midnight


def _closes(returns: dict[str, list[float]]) -> list[dict[str, float]]:
    """Closes whose log returns are ``returns``, from 100 at the first bar."""
    out = [{s: 100.0 for s in returns}]
    for i in range(len(next(iter(returns.values())))):
        out.append({s: out[-1][s] * float(np.exp(r[i])) for s, r in returns.items()})
    return out


def test_a_days_close_is_published_by_the_next_days_first_step_with_the_close_values():
    # Returns of the day's last 3 steps: A 1,2,3 %, B = 2 A (correlation 1), C 3,1,2 %:
    # centred A -1,0,1 and C 1,-1,0: cov -1, variances 2 and 2: correlation -0.5; B and C the same.
    # The next day's first return (A +5 %, B -5 %, C +5 %) would change every value: not in the close.
    bars = _closes({"A": [0.01, 0.02, 0.03, 0.05], "B": [0.02, 0.04, 0.06, -0.05], "C": [0.03, 0.01, 0.02, 0.05]})
    core = Correlations(CorrelationConfig(timeframe="1h", windows=(3,), min_common=2, snapshot_every=100))
    times = [DAY0 + h * HOUR_US for h in (20, 21, 22, 23)] + [DAY0 + 24 * HOUR_US]
    records = [core.step(t, bar) for t, bar in zip(times, bars)]
    assert not any(isinstance(r, CorrelationHistory) for rs in records[:4] for r in rs)  # nothing within the day
    history = [r for r in records[4] if isinstance(r, CorrelationHistory)]
    assert [(r.symbol_a, r.symbol_b) for r in history] == [("A", "B"), ("A", "C"), ("B", "C")]
    assert [r.value for r in history] == pytest.approx([1.0, -0.5, -0.5])
    assert {(r.day, r.timestamp, r.window_bars, r.common_bars, r.timeframe) for r in history} == {
        (date(2026, 1, 5), datetime(2026, 1, 5, 23, tzinfo=timezone.utc), 3, 3, "1h")
    }
    assert core.step(times[-1] + HOUR_US, bars[-1]) == []  # the same day again: nothing


def test_a_days_close_survives_a_restart_and_keeps_no_state_of_its_own():
    bars = _closes({"A": [0.01, 0.02, 0.03, 0.05], "B": [0.02, 0.04, 0.06, -0.05], "C": [0.03, 0.01, 0.02, 0.05]})
    cfg = CorrelationConfig(timeframe="1h", windows=(3,), min_common=2, snapshot_every=100)
    times = [DAY0 + h * HOUR_US for h in (20, 21, 22, 23, 24)]
    whole, head = Correlations(cfg), Correlations(cfg)
    expected = [whole.step(t, bar) for t, bar in zip(times, bars)][-1]
    for t, bar in zip(times[:4], bars[:4]):
        head.step(t, bar)
    blob = msgspec.msgpack.encode(head.snapshot_state())
    tail = Correlations(cfg, msgspec.msgpack.decode(blob, type=CorrelationState))
    assert tail.step(times[4], bars[4]) == expected and any(isinstance(r, CorrelationHistory) for r in expected)
    assert set(msgspec.structs.asdict(CorrelationState())) == set(msgspec.structs.asdict(head.state))


def test_the_threshold_follows_the_benchmarks_regime_and_each_change_is_recorded_once():
    rng = np.random.default_rng(3)
    n = 60
    base = rng.normal(0, 0.01, n)
    rets = {"SPY": base, "A": base + rng.normal(0, 0.01, n), "B": rng.normal(0, 0.01, n)}
    closes = pd.DataFrame({k: 100 * np.exp(np.cumsum(v)) for k, v in rets.items()})
    cfg = CorrelationConfig(windows=(40,), min_common=10, threshold=0.9, thresholds=(("volatile", 0.5),), snapshot_every=5)
    core = Correlations(cfg)
    regimes = {0: "ranging", 44: "volatile", 47: "volatile", 52: "trending_up"}  # the benchmark's, on the steps that carry one
    out: dict[int, list] = {}
    for t, row in enumerate(closes.itertuples(index=False)):
        out[t] = core.step(t * HOUR_US, dict(zip(closes.columns, row)), regimes.get(t))
    changes = {t: r for t, rs in out.items() for r in rs if isinstance(r, CorrelationThreshold)}
    assert sorted(changes) == [0, 44, 52]  # the first in force, then each change (not 47: the same; not 55: no regime)
    assert (changes[0].regime, changes[0].threshold, changes[0].previous_threshold) == ("ranging", 0.9, None)
    assert (changes[44].regime, changes[44].threshold, changes[44].previous_threshold) == ("volatile", 0.5, 0.9)
    assert (changes[52].regime, changes[52].threshold, changes[52].previous_threshold) == ("trending_up", 0.9, 0.5)
    assert changes[44].timestamp == datetime(1970, 1, 2, 20, tzinfo=timezone.utc)  # the step it took effect (hour 44)
    names, corr, _ = core.matrix(40)
    spy_a = abs(corr[names.index("A"), names.index("SPY")])

    def snapshot(t, kind):
        return [r for r in out[t] if isinstance(r, kind)]

    # Snapshots at 44 (volatile: 0.5) and 49 use the regime's threshold; 54 and 59 the single one again.
    assert [snapshot(t, CorrelationMatrix)[0].threshold for t in (39, 44, 49, 54, 59)] == [0.9, 0.5, 0.5, 0.9, 0.9]
    assert [snapshot(t, CorrelationAnalysis)[0].regime for t in (39, 44, 54)] == ["ranging", "volatile", "trending_up"]
    assert 0.5 <= spy_a < 0.9  # a pair between the two thresholds: a conflict in the volatile market only
    assert [(r.crossing, r.threshold) for r in snapshot(44, CorrelationConflict) if (r.symbol_a, r.symbol_b) == ("A", "SPY")] == [("above", 0.5)]
    assert [(r.crossing, r.threshold) for r in snapshot(54, CorrelationConflict) if (r.symbol_a, r.symbol_b) == ("A", "SPY")] == [("below", 0.9)]
    assert [g.threshold for g in snapshot(44, CorrelationGroup)] == [0.5] and snapshot(54, CorrelationGroup) == []
