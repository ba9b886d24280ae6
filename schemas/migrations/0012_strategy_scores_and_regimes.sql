-- Strategy scores and performance by regime (seed 000: StrategyScore, RegimePerformanceStats).
--
--   * trade_outcomes.entry_regimes: the symbol's regime on each timeframe when the trade
--     opened ({"1m": "ranging", "1h": "trending_up"}), what regime_performance_stats
--     groups by. NULL for trades opened before the symbol had a regime.
--   * regime_performance_stats (migration 0004) is filled from now on, one row per
--     strategy, regime and timeframe, all time; its money columns become NUMERIC
--     without a precision (as the execution tables', migration 0011): a sum over every
--     trade of a strategy must not outgrow DECIMAL(18, 4). It was never written before.
--   * strategy_scores: a composite score per strategy, model version and closed DAY, WEEK
--     or MONTH (formula in streams/performance.py); strategy_latest_scores: each one's
--     latest, the seed's Strategy.latestScore. Small keyed tables, the same on both flavours.

ALTER TABLE trade_outcomes ADD COLUMN entry_regimes JSONB;

ALTER TABLE regime_performance_stats
    ALTER COLUMN gross_profit TYPE NUMERIC,
    ALTER COLUMN gross_loss TYPE NUMERIC,
    ALTER COLUMN net_pnl TYPE NUMERIC,
    ALTER COLUMN expectancy TYPE NUMERIC,
    ALTER COLUMN avg_win TYPE NUMERIC,
    ALTER COLUMN avg_loss TYPE NUMERIC,
    ALTER COLUMN avg_trade TYPE NUMERIC;

CREATE TABLE strategy_scores (
    strategy_id VARCHAR(50) NOT NULL,
    model_version VARCHAR(20) NOT NULL,
    period_type VARCHAR(10) NOT NULL CHECK (period_type IN ('DAY', 'WEEK', 'MONTH')),
    period_start DATE NOT NULL,
    scored_at TIMESTAMPTZ NOT NULL,  -- the period's end
    total_trades INTEGER NOT NULL,
    risk_adjusted_score DOUBLE PRECISION NOT NULL CHECK (risk_adjusted_score BETWEEN 0 AND 1),
    win_rate_score DOUBLE PRECISION NOT NULL CHECK (win_rate_score BETWEEN 0 AND 1),
    drawdown_score DOUBLE PRECISION NOT NULL CHECK (drawdown_score BETWEEN 0 AND 1),
    consistency_score DOUBLE PRECISION CHECK (consistency_score BETWEEN 0 AND 1),
    score DOUBLE PRECISION NOT NULL CHECK (score BETWEEN 0 AND 100),
    created_at TIMESTAMPTZ DEFAULT NOW(),
    PRIMARY KEY (strategy_id, model_version, period_type, period_start)
);
CREATE INDEX idx_strategy_scores_recent ON strategy_scores (scored_at DESC, score DESC);

CREATE VIEW strategy_latest_scores AS
SELECT DISTINCT ON (strategy_id, model_version, period_type) *
  FROM strategy_scores
 ORDER BY strategy_id, model_version, period_type, period_start DESC;
