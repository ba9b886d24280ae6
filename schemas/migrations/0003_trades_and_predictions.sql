-- trade_outcomes and model_predictions (seed 001 sections 1 and 2).
--
-- Adapted from the seed, because a hypertable's (or a partitioned table's) unique keys
-- must hold its time column:
--   * trade_outcomes: "trade_id UUID UNIQUE" becomes UNIQUE (trade_id, entry_time); the
--     table is partitioned on entry_time. Writers must keep a trade's entry_time fixed
--     (the time of its first opening fill) so that (trade_id, entry_time) identifies
--     the trade and upserts on it update the row in place.
--   * model_predictions: "prediction_id UUID UNIQUE" becomes UNIQUE (prediction_id,
--     predicted_at); partitioned on predicted_at.
--   * "id BIGSERIAL PRIMARY KEY" stays a surrogate number (BIGSERIAL NOT NULL) but is no
--     primary key, for the same reason.
-- Other changes:
--   * predicted_direction and actual_direction are VARCHAR(7), not VARCHAR(4): the seed's
--     own values include 'NEUTRAL'; CHECKs state the values the seed lists in comments
--     (LONG/SHORT/NEUTRAL, confidence 0..1, a positive horizon).
--   * model_predictions.expiry_reason: why a prediction was closed without validation
--     (its symbol did not trade past the horizon in time); NULL otherwise.
-- TimescaleDB: 1-week chunks (seed 001), compression segmented by symbol and ordered by
-- time after 30 days (open trades and pending predictions are still updated before
-- that; later updates work on compressed chunks too), retention 5 years for
-- trade_outcomes and 3 years for model_predictions (seed 001).
-- PostgreSQL: monthly range partitions plus a DEFAULT partition; rows older than the
-- partitions made here land in DEFAULT until `tickwire maintain` moves them out.

CREATE TABLE trade_outcomes (
    id BIGSERIAL NOT NULL,
    trade_id UUID NOT NULL,

    -- Execution Details
    strategy_id VARCHAR(50) NOT NULL,
    model_version VARCHAR(20) NOT NULL,
    symbol VARCHAR(10) NOT NULL,
    direction VARCHAR(4) NOT NULL CHECK (direction IN ('LONG', 'SHORT')),
    entry_time TIMESTAMPTZ NOT NULL,
    exit_time TIMESTAMPTZ,

    -- Price Data
    entry_price DECIMAL(18, 8) NOT NULL,
    exit_price DECIMAL(18, 8),
    quantity INTEGER NOT NULL,

    -- Performance
    gross_pnl DECIMAL(18, 4),
    net_pnl DECIMAL(18, 4),  -- after commissions/slippage
    commission DECIMAL(18, 4) DEFAULT 0,
    slippage DECIMAL(18, 8) DEFAULT 0,

    -- Trade Characteristics
    duration_seconds INTEGER,
    max_favorable_excursion DECIMAL(18, 4),  -- max profit during trade
    max_adverse_excursion DECIMAL(18, 4),    -- max loss during trade

    -- Classification
    outcome_type VARCHAR(20) CHECK (outcome_type IN ('WIN', 'LOSS', 'BREAKEVEN', 'OPEN')),

    -- Metadata
    created_at TIMESTAMPTZ DEFAULT NOW(),
    updated_at TIMESTAMPTZ DEFAULT NOW(),

    UNIQUE (trade_id, entry_time)  -- seed: trade_id UNIQUE (see above)
) /* partition_by("entry_time") */;

CREATE INDEX idx_trade_outcomes_strategy ON trade_outcomes (strategy_id, entry_time DESC);
CREATE INDEX idx_trade_outcomes_model ON trade_outcomes (model_version, entry_time DESC);
CREATE INDEX idx_trade_outcomes_symbol ON trade_outcomes (symbol, entry_time DESC);
CREATE INDEX idx_trade_outcomes_time ON trade_outcomes (entry_time DESC);

CREATE TABLE model_predictions (
    id BIGSERIAL NOT NULL,
    prediction_id UUID NOT NULL,

    -- Model Context
    model_version VARCHAR(20) NOT NULL,
    model_type VARCHAR(30) NOT NULL,  -- 'direction', 'volatility', 'regime'

    -- Prediction Details
    symbol VARCHAR(10) NOT NULL,
    predicted_at TIMESTAMPTZ NOT NULL,
    prediction_horizon_minutes INTEGER NOT NULL CHECK (prediction_horizon_minutes > 0),  -- 5, 15, 60, etc.

    -- Prediction Values
    predicted_direction VARCHAR(7) CHECK (predicted_direction IN ('LONG', 'SHORT', 'NEUTRAL')),
    confidence_score DECIMAL(5, 4) CHECK (confidence_score BETWEEN 0 AND 1),
    predicted_volatility DECIMAL(10, 6),

    -- Feature Snapshot
    feature_vector JSONB NOT NULL,
    feature_hash VARCHAR(64),  -- SHA-256 (hex) of the canonical feature JSON

    -- Actual Outcome (filled later)
    actual_direction VARCHAR(7) CHECK (actual_direction IN ('LONG', 'SHORT', 'NEUTRAL')),
    actual_return DECIMAL(18, 8),
    prediction_accuracy BOOLEAN,

    -- Validation
    validated_at TIMESTAMPTZ,
    expiry_reason VARCHAR(100),  -- not in the seed: set when a prediction expires unvalidated

    created_at TIMESTAMPTZ DEFAULT NOW(),

    UNIQUE (prediction_id, predicted_at)  -- seed: prediction_id UNIQUE (see above)
) /* partition_by("predicted_at") */;

CREATE INDEX idx_model_predictions_model ON model_predictions (model_version, predicted_at DESC);
CREATE INDEX idx_model_predictions_symbol ON model_predictions (symbol, predicted_at DESC);
CREATE INDEX idx_model_predictions_unvalidated ON model_predictions (validated_at) WHERE validated_at IS NULL;

-- @timescaledb
SELECT create_hypertable('trade_outcomes', 'entry_time', chunk_time_interval => INTERVAL '1 week');
ALTER TABLE trade_outcomes SET (
    timescaledb.compress,
    timescaledb.compress_segmentby = 'symbol',
    timescaledb.compress_orderby = 'entry_time DESC'
);
SELECT add_compression_policy('trade_outcomes', compress_after => INTERVAL '30 days');
SELECT add_retention_policy('trade_outcomes', drop_after => INTERVAL '5 years');

SELECT create_hypertable('model_predictions', 'predicted_at', chunk_time_interval => INTERVAL '1 week');
ALTER TABLE model_predictions SET (
    timescaledb.compress,
    timescaledb.compress_segmentby = 'symbol',
    timescaledb.compress_orderby = 'predicted_at DESC'
);
SELECT add_compression_policy('model_predictions', compress_after => INTERVAL '30 days');
SELECT add_retention_policy('model_predictions', drop_after => INTERVAL '3 years');

-- @postgres
CREATE TABLE trade_outcomes_default PARTITION OF trade_outcomes DEFAULT;
SELECT tickwire_ensure_monthly_partitions('trade_outcomes', ((now() AT TIME ZONE 'UTC') - INTERVAL '1 month')::date,
                                          ((now() AT TIME ZONE 'UTC') + INTERVAL '3 months')::date);

CREATE TABLE model_predictions_default PARTITION OF model_predictions DEFAULT;
SELECT tickwire_ensure_monthly_partitions('model_predictions', ((now() AT TIME ZONE 'UTC') - INTERVAL '1 month')::date,
                                          ((now() AT TIME ZONE 'UTC') + INTERVAL '3 months')::date);
