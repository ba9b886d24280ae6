-- Regime history and correlation tables (seed 000: MarketRegimeHistory, CorrelationMatrix,
-- CorrelationEntry, CorrelationGroup, CorrelationGroupMember, CorrelationConflict).
-- The seed names the tables and their keys but not every column; the columns here are
-- what md.regimes.v1 and md.correlations.v1 carry.
--
-- All of them are time series: hypertables (TimescaleDB) or monthly range partitions
-- with a DEFAULT partition (PostgreSQL), so every unique key ends with "timestamp".
-- The seed's unique "symbol + timeframe + timestamp" for regime data is kept as is.
--
-- Conventions:
--   * window_bars is the rolling window length in bars (20, 60, ...); not "window",
--     a reserved word in SQL.
--   * A pair is stored once, symbol_a < symbol_b in byte order (COLLATE "C", the order
--     Python's str comparison uses, whatever the database's collation).
--   * Correlations are DECIMAL(7, 6) in [-1, 1]; NULL when the pair has fewer common
--     bars than the configured minimum or a constant series.
--   * correlation_entries, the largest table, has no surrogate id (its natural key is
--     the row identity; no sequence call per row).
--   * Groups and members are written by the same stage in the same batch; there are no
--     foreign keys between time-partitioned tables.
-- Chunk intervals (TimescaleDB): correlation_entries 1 day (one row per pair and
-- snapshot: the bulk); groups and members 1 week; regime history, matrix snapshots and
-- threshold events 30 days (a few rows per symbol or snapshot). No seed retention.

CREATE TABLE market_regime_history (
    id BIGSERIAL NOT NULL,
    symbol VARCHAR(10) NOT NULL,
    timeframe VARCHAR(5) NOT NULL,
    "timestamp" TIMESTAMPTZ NOT NULL,  -- the bar at which the new regime took effect
    regime VARCHAR(20) NOT NULL CHECK (regime IN ('trending_up', 'trending_down', 'ranging', 'volatile')),
    confidence DECIMAL(5, 4) CHECK (confidence BETWEEN 0 AND 1),
    previous_regime VARCHAR(20) CHECK (previous_regime IN ('trending_up', 'trending_down', 'ranging', 'volatile')),
    previous_regime_since TIMESTAMPTZ,  -- when previous_regime began; NULL for a symbol's first regime
    -- the indicator values that decided it (market_conditions types)
    close DECIMAL(18, 8),
    adx_14 DECIMAL(5, 2),
    plus_di_14 DECIMAL(5, 2),
    minus_di_14 DECIMAL(5, 2),
    ema_20 DECIMAL(18, 8),
    ema_50 DECIMAL(18, 8),
    atr_14 DECIMAL(18, 8),
    rsi_14 DECIMAL(5, 2),
    volatility_20d DECIMAL(10, 6),
    ema_slope_per_bar DOUBLE PRECISION,  -- relative change of ema_20 per bar over the rule's slope window
    volatility_percentile DECIMAL(5, 4) CHECK (volatility_percentile BETWEEN 0 AND 1),
    details JSONB,  -- anything else the rule used (its parameters, thresholds)
    created_at TIMESTAMPTZ DEFAULT NOW(),
    UNIQUE (symbol, timeframe, "timestamp")
) /* partition_by("timestamp") */;

CREATE INDEX idx_market_regime_history_regime ON market_regime_history (regime, "timestamp" DESC);

CREATE TABLE correlation_matrix (
    id BIGSERIAL NOT NULL,
    timeframe VARCHAR(5) NOT NULL,
    window_bars INTEGER NOT NULL CHECK (window_bars >= 2),
    "timestamp" TIMESTAMPTZ NOT NULL,  -- close of the bars the snapshot covers
    symbol_count INTEGER NOT NULL CHECK (symbol_count >= 0),
    pair_count INTEGER NOT NULL CHECK (pair_count >= 0),  -- pairs with a value (not NULL)
    mean_correlation DECIMAL(7, 6) CHECK (mean_correlation BETWEEN -1 AND 1),
    median_correlation DECIMAL(7, 6) CHECK (median_correlation BETWEEN -1 AND 1),
    stddev_correlation DECIMAL(7, 6) CHECK (stddev_correlation >= 0),
    min_correlation DECIMAL(7, 6) CHECK (min_correlation BETWEEN -1 AND 1),
    max_correlation DECIMAL(7, 6) CHECK (max_correlation BETWEEN -1 AND 1),
    mean_abs_correlation DECIMAL(7, 6) CHECK (mean_abs_correlation BETWEEN 0 AND 1),
    threshold DECIMAL(4, 3) CHECK (threshold BETWEEN 0 AND 1),  -- |correlation| threshold for groups
    pairs_above_threshold INTEGER CHECK (pairs_above_threshold >= 0),
    created_at TIMESTAMPTZ DEFAULT NOW(),
    UNIQUE (timeframe, window_bars, "timestamp")
) /* partition_by("timestamp") */;

CREATE TABLE correlation_entries (
    timeframe VARCHAR(5) NOT NULL,
    window_bars INTEGER NOT NULL CHECK (window_bars >= 2),
    "timestamp" TIMESTAMPTZ NOT NULL,
    symbol_a VARCHAR(10) NOT NULL,
    symbol_b VARCHAR(10) NOT NULL,
    value DECIMAL(7, 6) CHECK (value BETWEEN -1 AND 1),
    common_bars INTEGER NOT NULL CHECK (common_bars >= 0),
    CHECK (symbol_a COLLATE "C" < symbol_b COLLATE "C"),
    UNIQUE (timeframe, window_bars, "timestamp", symbol_a, symbol_b)
) /* partition_by("timestamp") */;

CREATE INDEX idx_correlation_entries_pair ON correlation_entries (symbol_a, symbol_b, "timestamp" DESC);
CREATE INDEX idx_correlation_entries_symbol_b ON correlation_entries (symbol_b, "timestamp" DESC);

CREATE TABLE correlation_groups (
    id BIGSERIAL NOT NULL,
    timeframe VARCHAR(5) NOT NULL,
    window_bars INTEGER NOT NULL CHECK (window_bars >= 2),
    "timestamp" TIMESTAMPTZ NOT NULL,
    group_no INTEGER NOT NULL CHECK (group_no >= 0),  -- number of the group within its snapshot
    threshold DECIMAL(4, 3) NOT NULL CHECK (threshold BETWEEN 0 AND 1),
    member_count INTEGER NOT NULL CHECK (member_count >= 1),
    mean_abs_correlation DECIMAL(7, 6) CHECK (mean_abs_correlation BETWEEN 0 AND 1),  -- over the group's pairs
    min_abs_correlation DECIMAL(7, 6) CHECK (min_abs_correlation BETWEEN 0 AND 1),
    created_at TIMESTAMPTZ DEFAULT NOW(),
    UNIQUE (timeframe, window_bars, "timestamp", group_no)
) /* partition_by("timestamp") */;

CREATE TABLE correlation_group_members (
    timeframe VARCHAR(5) NOT NULL,
    window_bars INTEGER NOT NULL CHECK (window_bars >= 2),
    "timestamp" TIMESTAMPTZ NOT NULL,
    group_no INTEGER NOT NULL CHECK (group_no >= 0),
    symbol VARCHAR(10) NOT NULL,
    mean_abs_correlation DECIMAL(7, 6) CHECK (mean_abs_correlation BETWEEN 0 AND 1),  -- to the other members
    created_at TIMESTAMPTZ DEFAULT NOW(),
    UNIQUE (timeframe, window_bars, "timestamp", symbol)  -- a symbol is in one group per snapshot
) /* partition_by("timestamp") */;

CREATE INDEX idx_correlation_group_members_symbol ON correlation_group_members (symbol, "timestamp" DESC);
CREATE INDEX idx_correlation_group_members_group ON correlation_group_members (timeframe, window_bars, "timestamp", group_no);

-- Threshold events (seed 000 CorrelationConflict): a pair's |correlation| crossing the
-- group threshold, upwards ('above') or back down ('below').
CREATE TABLE correlation_conflicts (
    id BIGSERIAL NOT NULL,
    timeframe VARCHAR(5) NOT NULL,
    window_bars INTEGER NOT NULL CHECK (window_bars >= 2),
    "timestamp" TIMESTAMPTZ NOT NULL,
    symbol_a VARCHAR(10) NOT NULL,
    symbol_b VARCHAR(10) NOT NULL,
    crossing VARCHAR(5) NOT NULL CHECK (crossing IN ('above', 'below')),
    threshold DECIMAL(4, 3) NOT NULL CHECK (threshold BETWEEN 0 AND 1),
    value DECIMAL(7, 6) CHECK (value BETWEEN -1 AND 1),           -- NULL: the pair lost its value
    previous_value DECIMAL(7, 6) CHECK (previous_value BETWEEN -1 AND 1),
    created_at TIMESTAMPTZ DEFAULT NOW(),
    CHECK (symbol_a COLLATE "C" < symbol_b COLLATE "C"),
    UNIQUE (timeframe, window_bars, "timestamp", symbol_a, symbol_b)
) /* partition_by("timestamp") */;

CREATE INDEX idx_correlation_conflicts_symbol_a ON correlation_conflicts (symbol_a, "timestamp" DESC);
CREATE INDEX idx_correlation_conflicts_symbol_b ON correlation_conflicts (symbol_b, "timestamp" DESC);

-- @timescaledb
SELECT create_hypertable('market_regime_history', 'timestamp', chunk_time_interval => INTERVAL '30 days');
ALTER TABLE market_regime_history SET (
    timescaledb.compress,
    timescaledb.compress_segmentby = 'symbol, timeframe',
    timescaledb.compress_orderby = '"timestamp" DESC'
);
SELECT add_compression_policy('market_regime_history', compress_after => INTERVAL '90 days');

SELECT create_hypertable('correlation_matrix', 'timestamp', chunk_time_interval => INTERVAL '30 days');
ALTER TABLE correlation_matrix SET (
    timescaledb.compress,
    timescaledb.compress_segmentby = 'timeframe, window_bars',
    timescaledb.compress_orderby = '"timestamp" DESC'
);
SELECT add_compression_policy('correlation_matrix', compress_after => INTERVAL '90 days');

SELECT create_hypertable('correlation_entries', 'timestamp', chunk_time_interval => INTERVAL '1 day');
ALTER TABLE correlation_entries SET (
    timescaledb.compress,
    timescaledb.compress_segmentby = 'symbol_a, timeframe, window_bars',
    timescaledb.compress_orderby = '"timestamp" DESC, symbol_b'
);
SELECT add_compression_policy('correlation_entries', compress_after => INTERVAL '7 days');

SELECT create_hypertable('correlation_groups', 'timestamp', chunk_time_interval => INTERVAL '1 week');
ALTER TABLE correlation_groups SET (
    timescaledb.compress,
    timescaledb.compress_segmentby = 'timeframe, window_bars',
    timescaledb.compress_orderby = '"timestamp" DESC, group_no'
);
SELECT add_compression_policy('correlation_groups', compress_after => INTERVAL '30 days');

SELECT create_hypertable('correlation_group_members', 'timestamp', chunk_time_interval => INTERVAL '1 week');
ALTER TABLE correlation_group_members SET (
    timescaledb.compress,
    timescaledb.compress_segmentby = 'symbol',
    timescaledb.compress_orderby = '"timestamp" DESC'
);
SELECT add_compression_policy('correlation_group_members', compress_after => INTERVAL '30 days');

SELECT create_hypertable('correlation_conflicts', 'timestamp', chunk_time_interval => INTERVAL '30 days');
ALTER TABLE correlation_conflicts SET (
    timescaledb.compress,
    timescaledb.compress_segmentby = 'symbol_a',
    timescaledb.compress_orderby = '"timestamp" DESC, symbol_b'
);
SELECT add_compression_policy('correlation_conflicts', compress_after => INTERVAL '90 days');

-- @postgres
CREATE TABLE market_regime_history_default PARTITION OF market_regime_history DEFAULT;
CREATE TABLE correlation_matrix_default PARTITION OF correlation_matrix DEFAULT;
CREATE TABLE correlation_entries_default PARTITION OF correlation_entries DEFAULT;
CREATE TABLE correlation_groups_default PARTITION OF correlation_groups DEFAULT;
CREATE TABLE correlation_group_members_default PARTITION OF correlation_group_members DEFAULT;
CREATE TABLE correlation_conflicts_default PARTITION OF correlation_conflicts DEFAULT;
SELECT tickwire_ensure_monthly_partitions(t, ((now() AT TIME ZONE 'UTC') - INTERVAL '1 month')::date,
                                          ((now() AT TIME ZONE 'UTC') + INTERVAL '3 months')::date)
  FROM unnest('{market_regime_history, correlation_matrix, correlation_entries, correlation_groups,
                correlation_group_members, correlation_conflicts}'::regclass[]) AS t;
