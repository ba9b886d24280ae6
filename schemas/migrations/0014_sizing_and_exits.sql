-- Position sizing and smart exits (issue #19, seed 000: PositionSizingHistory,
-- PositionSizingConfigHistory, SmartExitHistory, PartialExitHistory), from the trading
-- system's decisions (exec.sizing.v1, exec.exits.v1) joined with their trades.
--
--   * position_sizing_history: each sizing decision with its inputs, the configuration in
--     effect, and once its trade has closed, planned risk (quantity x stop distance)
--     against realised risk (the trade's MAE and its loss).
--   * position_sizing_config_history: each sizing configuration change, append-only. A few
--     rows per change: a plain table, neither partitioned nor compressed.
--   * smart_exit_history: each exit decision, and once its trade has closed, its
--     efficiency against the trade's MFE; partial_exit_history: each partial exit, and what
--     the rest of the position did afterwards.
-- A decision row is replaced only by a row of a higher version (the sinks' condition), so
-- a redelivered older row never overwrites a newer one. streams/decisions.py has the
-- formulas. Money columns are NUMERIC without a precision, prices DECIMAL(18, 8), ratios
-- DOUBLE PRECISION.
-- TimescaleDB: the three decision histories are hypertables of one-week chunks, compressed
-- after 30 days and kept 5 years (as trade_outcomes, which they are joined with). Every key
-- column is a segment-by or order-by column, so a row written again into a compressed
-- chunk decompresses only the batch it can meet. PostgreSQL: monthly partitions.

CREATE TABLE position_sizing_history (
    decision_id UUID NOT NULL,
    portfolio_id VARCHAR(50) NOT NULL,
    strategy_id VARCHAR(50) NOT NULL,
    symbol VARCHAR(10) NOT NULL,
    trade_id UUID,
    ts TIMESTAMPTZ NOT NULL,
    account_value NUMERIC NOT NULL CHECK (account_value > 0),
    risk_per_trade DOUBLE PRECISION NOT NULL CHECK (risk_per_trade > 0 AND risk_per_trade <= 1),
    stop_distance DECIMAL(18, 8) NOT NULL CHECK (stop_distance > 0),
    volatility DOUBLE PRECISION,
    correlation_adjustment DOUBLE PRECISION NOT NULL,
    regime_adjustment DOUBLE PRECISION NOT NULL,
    quantity INTEGER NOT NULL CHECK (quantity >= 0),
    config_id UUID,
    planned_risk NUMERIC NOT NULL,
    trade_quantity INTEGER,
    trade_closed_at TIMESTAMPTZ,
    max_adverse_excursion NUMERIC,
    realized_pnl NUMERIC,
    realized_loss NUMERIC,
    mae_to_planned DOUBLE PRECISION,
    loss_to_planned DOUBLE PRECISION,
    version INTEGER NOT NULL,
    PRIMARY KEY (decision_id, ts)
) /* partition_by("ts") */;
CREATE INDEX idx_position_sizing_history_strategy ON position_sizing_history (strategy_id, ts DESC);
CREATE INDEX idx_position_sizing_history_trade ON position_sizing_history (trade_id);

CREATE TABLE position_sizing_config_history (
    config_id UUID NOT NULL,
    portfolio_id VARCHAR(50) NOT NULL,
    strategy_id VARCHAR(50) NOT NULL,
    symbol VARCHAR(10) NOT NULL,
    ts TIMESTAMPTZ NOT NULL,
    method VARCHAR(20) NOT NULL CHECK (method IN ('fixed_fractional', 'volatility_target', 'kelly', 'fixed_quantity')),
    risk_per_trade DOUBLE PRECISION NOT NULL CHECK (risk_per_trade > 0 AND risk_per_trade <= 1),
    max_position_fraction DOUBLE PRECISION,
    volatility_target DOUBLE PRECISION,
    correlation_scaling BOOLEAN NOT NULL,
    regime_scaling BOOLEAN NOT NULL,
    PRIMARY KEY (config_id, symbol, ts)
);
CREATE INDEX idx_position_sizing_config_history_strategy ON position_sizing_config_history (portfolio_id, strategy_id, ts DESC);

CREATE TABLE smart_exit_history (
    exit_id UUID NOT NULL,
    trade_id UUID NOT NULL,
    strategy_id VARCHAR(50) NOT NULL,
    symbol VARCHAR(10) NOT NULL,
    ts TIMESTAMPTZ NOT NULL,
    reason VARCHAR(20) NOT NULL
        CHECK (reason IN ('target', 'trailing_stop', 'time', 'regime_change', 'correlation_conflict')),
    price DECIMAL(18, 8) NOT NULL,
    quantity INTEGER NOT NULL CHECK (quantity > 0),
    partial BOOLEAN NOT NULL,
    direction VARCHAR(5) CHECK (direction IN ('LONG', 'SHORT')),
    entry_price DECIMAL(18, 8),
    trade_closed_at TIMESTAMPTZ,
    exit_pnl NUMERIC,
    trade_pnl NUMERIC,
    max_favorable_excursion NUMERIC,
    exit_efficiency DOUBLE PRECISION,
    trade_efficiency DOUBLE PRECISION,
    version INTEGER NOT NULL,
    PRIMARY KEY (exit_id, ts)
) /* partition_by("ts") */;
CREATE INDEX idx_smart_exit_history_strategy ON smart_exit_history (strategy_id, ts DESC);
CREATE INDEX idx_smart_exit_history_trade ON smart_exit_history (trade_id);

CREATE TABLE partial_exit_history (
    exit_id UUID NOT NULL,
    trade_id UUID NOT NULL,
    strategy_id VARCHAR(50) NOT NULL,
    symbol VARCHAR(10) NOT NULL,
    ts TIMESTAMPTZ NOT NULL,
    reason VARCHAR(20) NOT NULL
        CHECK (reason IN ('target', 'trailing_stop', 'time', 'regime_change', 'correlation_conflict')),
    price DECIMAL(18, 8) NOT NULL,
    quantity INTEGER NOT NULL CHECK (quantity > 0),
    trade_closed_at TIMESTAMPTZ,
    remaining_quantity INTEGER,
    remainder_exit_price DOUBLE PRECISION,
    remainder_pnl NUMERIC,
    remainder_pnl_at_partial NUMERIC,
    remainder_gain NUMERIC,
    version INTEGER NOT NULL,
    PRIMARY KEY (exit_id, ts)
) /* partition_by("ts") */;
CREATE INDEX idx_partial_exit_history_strategy ON partial_exit_history (strategy_id, ts DESC);

-- @timescaledb
SELECT create_hypertable('position_sizing_history', 'ts', chunk_time_interval => INTERVAL '1 week');
ALTER TABLE position_sizing_history SET (timescaledb.compress, timescaledb.compress_segmentby = 'strategy_id',
                                         timescaledb.compress_orderby = 'ts DESC, decision_id');
SELECT add_compression_policy('position_sizing_history', compress_after => INTERVAL '30 days');
SELECT add_retention_policy('position_sizing_history', drop_after => INTERVAL '5 years');

SELECT create_hypertable('smart_exit_history', 'ts', chunk_time_interval => INTERVAL '1 week');
ALTER TABLE smart_exit_history SET (timescaledb.compress, timescaledb.compress_segmentby = 'strategy_id',
                                    timescaledb.compress_orderby = 'ts DESC, exit_id');
SELECT add_compression_policy('smart_exit_history', compress_after => INTERVAL '30 days');
SELECT add_retention_policy('smart_exit_history', drop_after => INTERVAL '5 years');

SELECT create_hypertable('partial_exit_history', 'ts', chunk_time_interval => INTERVAL '1 week');
ALTER TABLE partial_exit_history SET (timescaledb.compress, timescaledb.compress_segmentby = 'strategy_id',
                                      timescaledb.compress_orderby = 'ts DESC, exit_id');
SELECT add_compression_policy('partial_exit_history', compress_after => INTERVAL '30 days');
SELECT add_retention_policy('partial_exit_history', drop_after => INTERVAL '5 years');

-- @postgres
CREATE TABLE position_sizing_history_default PARTITION OF position_sizing_history DEFAULT;
CREATE TABLE smart_exit_history_default PARTITION OF smart_exit_history DEFAULT;
CREATE TABLE partial_exit_history_default PARTITION OF partial_exit_history DEFAULT;
SELECT tickwire_ensure_monthly_partitions(t, ((now() AT TIME ZONE 'UTC') - INTERVAL '1 month')::date,
                                          ((now() AT TIME ZONE 'UTC') + INTERVAL '3 months')::date)
  FROM unnest(ARRAY['position_sizing_history', 'smart_exit_history', 'partial_exit_history']) AS t;
