-- market_conditions: one row per bar and timeframe (seed 001 section 3, plus timeframe,
-- vwap, bb_middle, macd_hist, ADX and the DI lines).
--
-- Adapted from the seed: the row identity is UNIQUE (symbol, timeframe, "timestamp")
-- because a hypertable's or a partitioned table's unique keys must hold its time
-- column; "id" stays as a surrogate number but is not a primary key for that reason.
-- volatility_20d is the sample standard deviation of the last 20 log returns of this
-- timeframe's closes (not annualised).
CREATE TABLE market_conditions (
    id BIGSERIAL NOT NULL,
    symbol VARCHAR(10) NOT NULL,
    timeframe VARCHAR(5) NOT NULL,
    "timestamp" TIMESTAMPTZ NOT NULL,
    open DECIMAL(18, 8) NOT NULL,
    high DECIMAL(18, 8) NOT NULL,
    low DECIMAL(18, 8) NOT NULL,
    close DECIMAL(18, 8) NOT NULL,
    volume BIGINT NOT NULL,
    vwap DECIMAL(18, 8),
    atr_14 DECIMAL(18, 8),
    rsi_14 DECIMAL(5, 2),
    ema_20 DECIMAL(18, 8),
    ema_50 DECIMAL(18, 8),
    bb_upper DECIMAL(18, 8),
    bb_middle DECIMAL(18, 8),
    bb_lower DECIMAL(18, 8),
    macd_line DECIMAL(18, 8),
    macd_signal DECIMAL(18, 8),
    macd_hist DECIMAL(18, 8),
    adx_14 DECIMAL(5, 2),
    plus_di_14 DECIMAL(5, 2),
    minus_di_14 DECIMAL(5, 2),
    volatility_20d DECIMAL(10, 6),
    vix DECIMAL(8, 4),
    detected_regime VARCHAR(20) CHECK (detected_regime IN ('trending_up', 'trending_down', 'ranging', 'volatile')),
    regime_confidence DECIMAL(5, 4),
    spy_correlation DECIMAL(4, 3),
    sector_correlation DECIMAL(4, 3),
    created_at TIMESTAMPTZ DEFAULT NOW(),
    UNIQUE (symbol, timeframe, "timestamp")
) /* partition_by("timestamp") */;

COMMENT ON COLUMN market_conditions.volatility_20d IS
    'sample standard deviation of the last 20 log returns of close, this timeframe, not annualised';

CREATE INDEX idx_market_conditions_regime ON market_conditions (detected_regime, "timestamp" DESC);

-- @timescaledb
SELECT create_hypertable('market_conditions', 'timestamp', chunk_time_interval => INTERVAL '1 day');

-- @postgres
CREATE OR REPLACE FUNCTION tickwire_ensure_monthly_partitions(parent regclass, first_month date, last_month date)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    month date := date_trunc('month', first_month);
    created integer := 0;
    child text;
BEGIN
    WHILE month <= last_month LOOP
        child := format('%s_p%s', parent::text, to_char(month, 'YYYYMM'));
        IF to_regclass(child) IS NULL THEN
            EXECUTE format('CREATE TABLE %I PARTITION OF %s FOR VALUES FROM (%L) TO (%L)',
                           child, parent, month::timestamptz, (month + INTERVAL '1 month')::timestamptz);
            created := created + 1;
        END IF;
        month := month + INTERVAL '1 month';
    END LOOP;
    RETURN created;
END $$;

CREATE TABLE market_conditions_default PARTITION OF market_conditions DEFAULT;
SELECT tickwire_ensure_monthly_partitions('market_conditions', date '2020-01-01', (now() + INTERVAL '12 months')::date);
