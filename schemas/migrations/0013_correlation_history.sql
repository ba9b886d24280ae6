-- Correlation history, thresholds by regime and per-snapshot analysis (issue #19; seed 000:
-- HistoricalCorrelation, CorrelationThreshold, CorrelationAnalysisResult). All three are
-- filled from md.correlations.v1 (schemas/correlations.py), written once per natural key
-- (a redelivered record changes nothing).
--
--   * historical_correlations: each pair's value at a UTC day's close, one row per
--     (timeframe, window, pair, day). One row per window (window_bars), not one column per
--     window: the windows are a setting (correlation_windows, default 20,60), so a
--     deployment with other windows needs no other table. The day's close is the
--     timeframe's last bar of that UTC day ("timestamp"); the rows are published when the
--     first bar of a later day arrives (event time), so "day" is the UTC date of
--     "timestamp" (a CHECK holds it) and the key's "timestamp" admits one row per day.
--   * correlation_thresholds: the group/conflict threshold in force per timeframe, one row
--     each time it changes (and the first), from "timestamp" on; regime is the benchmark's
--     regime that chose it (NULL: none known yet, the single correlation_threshold).
--     Append-only: the sinks insert and never update.
--   * correlation_analysis_results: per snapshot and window, the summary a user reads:
--     mean and standard deviation of the pairs' values, group count, the most and least
--     correlated pairs (highest and lowest signed value), symbol and pair counts, and the
--     threshold (and regime) the snapshot's groups used.
--
-- Conventions of 0005: pairs stored once, symbol_a < symbol_b in byte order; correlations
-- DECIMAL(7, 6) in [-1, 1]; thresholds DECIMAL(4, 3). Time series: hypertables on
-- TimescaleDB (history 30-day chunks, compressed after 30 days; thresholds one-year chunks,
-- analysis 30-day chunks, both compressed after 90 days; no retention, as for 0005's
-- tables) with every key column a segment-by or order-by column, so a row written again
-- into a compressed chunk decompresses only the batch it can meet; monthly range
-- partitions with a DEFAULT partition on plain PostgreSQL.

CREATE TABLE historical_correlations (
    timeframe VARCHAR(5) NOT NULL,
    window_bars INTEGER NOT NULL CHECK (window_bars >= 2),
    day DATE NOT NULL,  -- the UTC day whose close this is
    "timestamp" TIMESTAMPTZ NOT NULL,  -- the day's last bar
    symbol_a VARCHAR(10) NOT NULL,
    symbol_b VARCHAR(10) NOT NULL,
    value DECIMAL(7, 6) CHECK (value BETWEEN -1 AND 1),
    common_bars INTEGER NOT NULL CHECK (common_bars >= 0),
    CHECK (day = ("timestamp" AT TIME ZONE 'UTC')::date),
    CHECK (symbol_a COLLATE "C" < symbol_b COLLATE "C"),
    UNIQUE (timeframe, window_bars, "timestamp", symbol_a, symbol_b)
) /* partition_by("timestamp") */;

CREATE INDEX idx_historical_correlations_pair ON historical_correlations (symbol_a, symbol_b, day DESC);

CREATE TABLE correlation_thresholds (
    timeframe VARCHAR(5) NOT NULL,
    "timestamp" TIMESTAMPTZ NOT NULL,  -- the bar from which it is in force
    regime VARCHAR(20) CHECK (regime IN ('trending_up', 'trending_down', 'ranging', 'volatile')),
    threshold DECIMAL(4, 3) NOT NULL CHECK (threshold > 0 AND threshold <= 1),
    previous_threshold DECIMAL(4, 3) CHECK (previous_threshold > 0 AND previous_threshold <= 1),
    UNIQUE (timeframe, "timestamp")
) /* partition_by("timestamp") */;

CREATE TABLE correlation_analysis_results (
    timeframe VARCHAR(5) NOT NULL,
    window_bars INTEGER NOT NULL CHECK (window_bars >= 2),
    "timestamp" TIMESTAMPTZ NOT NULL,  -- close of the bars the snapshot covers
    symbol_count INTEGER NOT NULL CHECK (symbol_count >= 0),
    pair_count INTEGER NOT NULL CHECK (pair_count >= 0),  -- pairs with a value
    group_count INTEGER NOT NULL CHECK (group_count >= 0),
    threshold DECIMAL(4, 3) NOT NULL CHECK (threshold > 0 AND threshold <= 1),
    regime VARCHAR(20) CHECK (regime IN ('trending_up', 'trending_down', 'ranging', 'volatile')),
    mean_correlation DECIMAL(7, 6) CHECK (mean_correlation BETWEEN -1 AND 1),
    stddev_correlation DECIMAL(7, 6) CHECK (stddev_correlation >= 0),  -- population, of the pairs' values
    most_correlated_a VARCHAR(10),
    most_correlated_b VARCHAR(10),
    most_correlated_value DECIMAL(7, 6) CHECK (most_correlated_value BETWEEN -1 AND 1),
    least_correlated_a VARCHAR(10),
    least_correlated_b VARCHAR(10),
    least_correlated_value DECIMAL(7, 6) CHECK (least_correlated_value BETWEEN -1 AND 1),
    UNIQUE (timeframe, window_bars, "timestamp")
) /* partition_by("timestamp") */;

-- @timescaledb
SELECT create_hypertable('historical_correlations', 'timestamp', chunk_time_interval => INTERVAL '30 days');
ALTER TABLE historical_correlations SET (
    timescaledb.compress,
    timescaledb.compress_segmentby = 'symbol_a, timeframe, window_bars',
    timescaledb.compress_orderby = '"timestamp" DESC, symbol_b'
);
SELECT add_compression_policy('historical_correlations', compress_after => INTERVAL '30 days');

SELECT create_hypertable('correlation_thresholds', 'timestamp', chunk_time_interval => INTERVAL '365 days');
ALTER TABLE correlation_thresholds SET (
    timescaledb.compress,
    timescaledb.compress_segmentby = 'timeframe',
    timescaledb.compress_orderby = '"timestamp" DESC'
);
SELECT add_compression_policy('correlation_thresholds', compress_after => INTERVAL '90 days');

SELECT create_hypertable('correlation_analysis_results', 'timestamp', chunk_time_interval => INTERVAL '30 days');
ALTER TABLE correlation_analysis_results SET (
    timescaledb.compress,
    timescaledb.compress_segmentby = 'timeframe, window_bars',
    timescaledb.compress_orderby = '"timestamp" DESC'
);
SELECT add_compression_policy('correlation_analysis_results', compress_after => INTERVAL '90 days');

-- @postgres
CREATE TABLE historical_correlations_default PARTITION OF historical_correlations DEFAULT;
CREATE TABLE correlation_thresholds_default PARTITION OF correlation_thresholds DEFAULT;
CREATE TABLE correlation_analysis_results_default PARTITION OF correlation_analysis_results DEFAULT;
SELECT tickwire_ensure_monthly_partitions(t, ((now() AT TIME ZONE 'UTC') - INTERVAL '1 month')::date,
                                          ((now() AT TIME ZONE 'UTC') + INTERVAL '3 months')::date)
  FROM unnest(ARRAY['historical_correlations', 'correlation_thresholds', 'correlation_analysis_results']) AS t;
