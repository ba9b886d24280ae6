-- The live execution stream (seed 003: Order, Position, Portfolio, the portfolio_realtime
-- and symbol_performance_summary views, risk limits, the audit trail).
--
--   * orders: each order's current state joined with its fills (one row per order_id);
--     order_events: every event of every order, append-only.
--   * positions: each (portfolio, symbol)'s current position; position_snapshots: every
--     update of it (a fill, or a bar of a symbol held).
--   * portfolios: each portfolio's current valuation; portfolio_snapshots: every update.
--   * portfolio_performance: each portfolio's DAY, WEEK and MONTH (return, volatility,
--     Sharpe, Sortino, max drawdown, beta to the benchmark), recomputed as days close.
--   * risk_events: each limit crossed (BREACH) or back within (CLEARED).
--   * execution_audit: every order event, fill and position change with the Kafka
--     coordinates of the message that caused it. Append-only: a trigger refuses UPDATE
--     from any role, and the sink role is granted INSERT and SELECT on it only (no UPDATE,
--     and no role of the sinks' has DELETE); `tickwire maintain`, as the owner, may still
--     move rows out of the DEFAULT partition on plain PostgreSQL.
-- Money columns are NUMERIC without a precision: a position of 2^53 units marked at a price
-- just inside the contract (1e9) must still be stored, and DECIMAL(18, 4) would refuse it.
-- Prices stay DECIMAL(18, 8), as in seed 001. The current-state tables are replaced only
-- by a row of a higher version (the sinks' condition), so a redelivered older row never
-- overwrites a newer one.
-- TimescaleDB: the histories are hypertables (one-day chunks for the snapshots, one week
-- for the rest), compressed after 7 days (snapshots) or 30 days (the rest); snapshots of positions
-- are kept a year, of portfolios 5 years; order events, risk events and the audit are
-- kept. Every key column is a segment-by or order-by column, so a row written again into a
-- compressed chunk decompresses only the batch it can meet. PostgreSQL: monthly partitions,
-- as for the other histories.

CREATE TABLE orders (
    order_id VARCHAR(64) PRIMARY KEY,
    portfolio_id VARCHAR(50) NOT NULL,
    strategy_id VARCHAR(50) NOT NULL,
    symbol VARCHAR(10) NOT NULL,
    side VARCHAR(4) NOT NULL CHECK (side IN ('BUY', 'SELL')),
    order_type VARCHAR(10) NOT NULL CHECK (order_type IN ('MARKET', 'LIMIT', 'STOP', 'STOP_LIMIT')),
    time_in_force VARCHAR(3) NOT NULL CHECK (time_in_force IN ('DAY', 'GTC', 'IOC', 'FOK')),
    quantity BIGINT NOT NULL CHECK (quantity > 0),
    limit_price DECIMAL(18, 8),
    stop_price DECIMAL(18, 8),
    status VARCHAR(16) NOT NULL
        CHECK (status IN ('OPEN', 'PARTIALLY_FILLED', 'FILLED', 'CANCELLED', 'REJECTED', 'EXPIRED')),
    filled_quantity BIGINT NOT NULL,
    avg_fill_price DECIMAL(18, 8),
    fill_ratio DOUBLE PRECISION NOT NULL,
    slippage DECIMAL(18, 8),
    placed_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    first_fill_at TIMESTAMPTZ,
    completed_at TIMESTAMPTZ,
    time_to_fill_ms BIGINT,
    reason VARCHAR(200),
    version INTEGER NOT NULL
);
CREATE INDEX idx_orders_portfolio ON orders (portfolio_id, placed_at DESC);
CREATE INDEX idx_orders_open ON orders (symbol) WHERE status IN ('OPEN', 'PARTIALLY_FILLED');

CREATE TABLE order_events (
    order_id VARCHAR(64) NOT NULL,
    version INTEGER NOT NULL,
    ts TIMESTAMPTZ NOT NULL,
    event VARCHAR(10) NOT NULL CHECK (event IN ('PLACED', 'AMENDED', 'CANCELLED', 'REJECTED', 'EXPIRED', 'FILL')),
    status VARCHAR(16) NOT NULL,
    portfolio_id VARCHAR(50) NOT NULL,
    symbol VARCHAR(10) NOT NULL,
    quantity BIGINT NOT NULL,
    filled_quantity BIGINT NOT NULL,
    fill_id VARCHAR(64),
    fill_price DECIMAL(18, 8),
    fill_quantity BIGINT,
    limit_price DECIMAL(18, 8),
    reason VARCHAR(200),
    PRIMARY KEY (order_id, version, ts)
) /* partition_by("ts") */;
CREATE INDEX idx_order_events_portfolio ON order_events (portfolio_id, ts DESC);

CREATE TABLE positions (
    portfolio_id VARCHAR(50) NOT NULL,
    symbol VARCHAR(10) NOT NULL,
    ts TIMESTAMPTZ NOT NULL,
    cause VARCHAR(4) NOT NULL CHECK (cause IN ('FILL', 'MARK')),
    quantity BIGINT NOT NULL,
    avg_cost DECIMAL(18, 8),
    mark_price DECIMAL(18, 8) NOT NULL,
    market_value NUMERIC NOT NULL,
    exposure NUMERIC NOT NULL,
    unrealized_pnl NUMERIC NOT NULL,
    realized_pnl NUMERIC NOT NULL,
    fees NUMERIC NOT NULL,
    cash_flow NUMERIC NOT NULL,
    day_pnl NUMERIC NOT NULL,
    sector VARCHAR(50),
    opened_at TIMESTAMPTZ,
    version INTEGER NOT NULL,
    PRIMARY KEY (portfolio_id, symbol)
);
CREATE INDEX idx_positions_open ON positions (symbol) WHERE quantity <> 0;

CREATE TABLE position_snapshots (LIKE positions INCLUDING DEFAULTS INCLUDING CONSTRAINTS, PRIMARY KEY (portfolio_id, symbol, version, ts))
    /* partition_by("ts") */;
CREATE INDEX idx_position_snapshots_symbol ON position_snapshots (symbol, ts DESC);

CREATE TABLE portfolios (
    portfolio_id VARCHAR(50) PRIMARY KEY,
    ts TIMESTAMPTZ NOT NULL,
    cash NUMERIC NOT NULL,
    market_value NUMERIC NOT NULL,
    total_value NUMERIC NOT NULL,
    gross_exposure NUMERIC NOT NULL,
    net_exposure NUMERIC NOT NULL,
    realized_pnl NUMERIC NOT NULL,
    unrealized_pnl NUMERIC NOT NULL,
    day_pnl NUMERIC NOT NULL,
    positions_count INTEGER NOT NULL,
    largest_position_symbol VARCHAR(10),
    largest_position_value NUMERIC,
    sector_exposure JSONB NOT NULL,
    version BIGINT NOT NULL
);

CREATE TABLE portfolio_snapshots (LIKE portfolios INCLUDING DEFAULTS INCLUDING CONSTRAINTS, PRIMARY KEY (portfolio_id, version, ts))
    /* partition_by("ts") */;

CREATE TABLE portfolio_performance (
    portfolio_id VARCHAR(50) NOT NULL,
    period_type VARCHAR(5) NOT NULL CHECK (period_type IN ('DAY', 'WEEK', 'MONTH')),
    period_start DATE NOT NULL,
    period_end DATE NOT NULL,
    trading_days INTEGER NOT NULL,
    start_value NUMERIC NOT NULL,
    end_value NUMERIC NOT NULL,
    period_return DOUBLE PRECISION NOT NULL,
    volatility DOUBLE PRECISION,
    sharpe_ratio DECIMAL(8, 4),
    sortino_ratio DECIMAL(8, 4),
    max_drawdown DOUBLE PRECISION NOT NULL,
    beta DOUBLE PRECISION,
    benchmark_return DOUBLE PRECISION,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (portfolio_id, period_type, period_start)
);

CREATE TABLE risk_events (
    portfolio_id VARCHAR(50) NOT NULL,
    ts TIMESTAMPTZ NOT NULL,
    rule VARCHAR(30) NOT NULL
        CHECK (rule IN ('max_position_value', 'max_gross_exposure', 'max_sector_share', 'max_pair_correlation', 'negative_cash')),
    subject VARCHAR(50) NOT NULL,  -- a symbol, a sector, a portfolio, or a pair 'A/B'
    state VARCHAR(7) NOT NULL CHECK (state IN ('BREACH', 'CLEARED')),
    observed NUMERIC NOT NULL,
    limit_value NUMERIC NOT NULL,
    PRIMARY KEY (portfolio_id, rule, subject, ts, state)
) /* partition_by("ts") */;

CREATE TABLE execution_audit (
    source_topic VARCHAR(249) NOT NULL,
    source_partition INTEGER NOT NULL,
    source_offset BIGINT NOT NULL,
    kind VARCHAR(8) NOT NULL CHECK (kind IN ('ORDER', 'FILL', 'POSITION')),
    subject VARCHAR(64) NOT NULL,
    ts TIMESTAMPTZ NOT NULL,
    portfolio_id VARCHAR(50) NOT NULL,
    symbol VARCHAR(10) NOT NULL,
    payload JSONB NOT NULL,
    recorded_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (source_topic, source_partition, source_offset, kind, subject, ts)
) /* partition_by("ts") */;
CREATE INDEX idx_execution_audit_portfolio ON execution_audit (portfolio_id, ts DESC);

CREATE FUNCTION tickwire_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE TRIGGER execution_audit_append_only BEFORE UPDATE ON execution_audit
    FOR EACH ROW EXECUTE FUNCTION tickwire_append_only();

-- Seed 003's views. portfolio_realtime: each portfolio's latest valuation with its open
-- positions counted and its day's return. symbol_performance_summary: daily OHLCV per
-- symbol (candles_1d, a continuous aggregate on TimescaleDB) with the day's return and the
-- day's closed trades (mv_daily_trading_stats).
CREATE VIEW portfolio_realtime AS
SELECT p.portfolio_id, p.ts AS as_of, p.cash, p.market_value, p.total_value, p.gross_exposure, p.net_exposure,
       p.realized_pnl, p.unrealized_pnl, p.day_pnl,
       p.day_pnl / NULLIF(p.total_value - p.day_pnl, 0) AS day_return,
       p.positions_count, p.largest_position_symbol, p.largest_position_value, p.sector_exposure
  FROM portfolios p;

CREATE VIEW symbol_performance_summary AS
SELECT c.symbol, c.bucket AS day, c.open, c.high, c.low, c.close, c.volume, c.bar_count,
       c.close / NULLIF(c.open, 0) - 1 AS day_return,
       t.total_trades, t.winning_trades, t.losing_trades
  FROM candles_1d c
  LEFT JOIN mv_daily_trading_stats t ON t.symbol = c.symbol AND t.bucket = c.bucket;

-- @timescaledb
SELECT create_hypertable('order_events', 'ts', chunk_time_interval => INTERVAL '1 week');
ALTER TABLE order_events SET (timescaledb.compress, timescaledb.compress_segmentby = 'portfolio_id',
                              timescaledb.compress_orderby = 'ts DESC, order_id, version');
SELECT add_compression_policy('order_events', compress_after => INTERVAL '30 days');

SELECT create_hypertable('position_snapshots', 'ts', chunk_time_interval => INTERVAL '1 day');
ALTER TABLE position_snapshots SET (timescaledb.compress, timescaledb.compress_segmentby = 'portfolio_id, symbol',
                                    timescaledb.compress_orderby = 'ts DESC, version');
SELECT add_compression_policy('position_snapshots', compress_after => INTERVAL '7 days');
SELECT add_retention_policy('position_snapshots', drop_after => INTERVAL '1 year');

SELECT create_hypertable('portfolio_snapshots', 'ts', chunk_time_interval => INTERVAL '1 day');
ALTER TABLE portfolio_snapshots SET (timescaledb.compress, timescaledb.compress_segmentby = 'portfolio_id',
                                     timescaledb.compress_orderby = 'ts DESC, version');
SELECT add_compression_policy('portfolio_snapshots', compress_after => INTERVAL '7 days');
SELECT add_retention_policy('portfolio_snapshots', drop_after => INTERVAL '5 years');

SELECT create_hypertable('risk_events', 'ts', chunk_time_interval => INTERVAL '1 week');
ALTER TABLE risk_events SET (timescaledb.compress, timescaledb.compress_segmentby = 'portfolio_id',
                             timescaledb.compress_orderby = 'ts DESC, rule, subject, state');
SELECT add_compression_policy('risk_events', compress_after => INTERVAL '30 days');

SELECT create_hypertable('execution_audit', 'ts', chunk_time_interval => INTERVAL '1 week');
ALTER TABLE execution_audit SET (timescaledb.compress, timescaledb.compress_segmentby = 'portfolio_id',
                                 timescaledb.compress_orderby = 'ts DESC, source_topic, source_partition, source_offset, kind, subject');
SELECT add_compression_policy('execution_audit', compress_after => INTERVAL '30 days');

-- @postgres
CREATE TABLE order_events_default PARTITION OF order_events DEFAULT;
CREATE TABLE position_snapshots_default PARTITION OF position_snapshots DEFAULT;
CREATE TABLE portfolio_snapshots_default PARTITION OF portfolio_snapshots DEFAULT;
CREATE TABLE risk_events_default PARTITION OF risk_events DEFAULT;
CREATE TABLE execution_audit_default PARTITION OF execution_audit DEFAULT;
SELECT tickwire_ensure_monthly_partitions(t, ((now() AT TIME ZONE 'UTC') - INTERVAL '1 month')::date,
                                          ((now() AT TIME ZONE 'UTC') + INTERVAL '3 months')::date)
  FROM unnest(ARRAY['order_events', 'position_snapshots', 'portfolio_snapshots', 'risk_events', 'execution_audit']) AS t;
