-- Performance, improvement and experiment tables: seed 001 sections 4 to 8 and the seed
-- 000 RegimePerformanceStats. Small, keyed tables updated in place: plain tables with
-- the seeds' primary keys, the same with and without TimescaleDB.
--
-- Adapted from the seed:
--   * strategy_performance gets wilson_lower_bound (lower bound of the Wilson score
--     interval of win_rate, seed 004) and expectancy (expected net P&L per trade).
--   * model_performance gets UNIQUE (model_version, model_type, evaluation_date): one
--     evaluation per model, type and day, the key its writer upserts on (the seed has
--     no natural key).
--   * regime_performance_stats (seed 000): unique per strategy, regime and timeframe
--     as the seed says; the statistics are strategy_performance's.

CREATE TABLE strategy_performance (
    id BIGSERIAL PRIMARY KEY,

    strategy_id VARCHAR(50) NOT NULL,
    model_version VARCHAR(20) NOT NULL,
    period_type VARCHAR(10) NOT NULL CHECK (period_type IN ('DAY', 'WEEK', 'MONTH')),
    period_start DATE NOT NULL,

    -- Trade Counts
    total_trades INTEGER DEFAULT 0,
    winning_trades INTEGER DEFAULT 0,
    losing_trades INTEGER DEFAULT 0,
    breakeven_trades INTEGER DEFAULT 0,

    -- Financial Metrics
    gross_profit DECIMAL(18, 4) DEFAULT 0,
    gross_loss DECIMAL(18, 4) DEFAULT 0,
    net_pnl DECIMAL(18, 4) DEFAULT 0,
    total_commission DECIMAL(18, 4) DEFAULT 0,

    -- Performance Ratios
    win_rate DECIMAL(5, 4),
    wilson_lower_bound DECIMAL(5, 4),  -- seed 004 (issue 5)
    profit_factor DECIMAL(8, 4),
    expectancy DECIMAL(18, 4),         -- seed 004 (issue 5)
    avg_win DECIMAL(18, 4),
    avg_loss DECIMAL(18, 4),
    avg_trade DECIMAL(18, 4),
    largest_win DECIMAL(18, 4),
    largest_loss DECIMAL(18, 4),

    -- Risk Metrics
    max_drawdown DECIMAL(8, 4),
    max_drawdown_duration_days INTEGER,
    sharpe_ratio DECIMAL(8, 4),
    sortino_ratio DECIMAL(8, 4),
    calmar_ratio DECIMAL(8, 4),

    -- Execution Quality
    avg_slippage DECIMAL(18, 8),
    avg_fill_time_ms INTEGER,

    created_at TIMESTAMPTZ DEFAULT NOW(),
    updated_at TIMESTAMPTZ DEFAULT NOW(),

    UNIQUE (strategy_id, model_version, period_type, period_start)
);

CREATE INDEX idx_strategy_performance_strategy ON strategy_performance (strategy_id, period_start DESC);
CREATE INDEX idx_strategy_performance_model ON strategy_performance (model_version, period_start DESC);

CREATE TABLE model_performance (
    id BIGSERIAL PRIMARY KEY,

    model_version VARCHAR(20) NOT NULL,
    model_type VARCHAR(30) NOT NULL,
    evaluation_date DATE NOT NULL,

    -- Dataset Info
    training_samples INTEGER,
    testing_samples INTEGER,
    training_period_start DATE,
    training_period_end DATE,

    -- Classification Metrics
    accuracy DECIMAL(5, 4),
    precision DECIMAL(5, 4),
    recall DECIMAL(5, 4),
    f1_score DECIMAL(5, 4),
    auc_roc DECIMAL(5, 4),

    -- Calibration
    brier_score DECIMAL(6, 5),
    expected_calibration_error DECIMAL(6, 5),

    -- By Regime Performance
    trending_up_accuracy DECIMAL(5, 4),
    trending_down_accuracy DECIMAL(5, 4),
    ranging_accuracy DECIMAL(5, 4),
    volatile_accuracy DECIMAL(5, 4),

    -- Feature Importance
    feature_importance JSONB,

    -- Production Performance (backfilled)
    live_accuracy DECIMAL(5, 4),
    live_pnl_contribution DECIMAL(18, 4),

    -- Status
    status VARCHAR(20) DEFAULT 'evaluating' CHECK (status IN ('evaluating', 'staging', 'production', 'retired')),

    created_at TIMESTAMPTZ DEFAULT NOW(),

    UNIQUE (model_version, model_type, evaluation_date)  -- not in the seed (see above)
);

CREATE INDEX idx_model_performance_version ON model_performance (model_version, evaluation_date DESC);
CREATE INDEX idx_model_performance_status ON model_performance (status);

CREATE TABLE regime_performance_stats (
    id BIGSERIAL PRIMARY KEY,

    strategy_id VARCHAR(50) NOT NULL,
    regime VARCHAR(20) NOT NULL CHECK (regime IN ('trending_up', 'trending_down', 'ranging', 'volatile')),
    timeframe VARCHAR(5) NOT NULL,

    total_trades INTEGER DEFAULT 0,
    winning_trades INTEGER DEFAULT 0,
    losing_trades INTEGER DEFAULT 0,
    breakeven_trades INTEGER DEFAULT 0,

    gross_profit DECIMAL(18, 4) DEFAULT 0,
    gross_loss DECIMAL(18, 4) DEFAULT 0,
    net_pnl DECIMAL(18, 4) DEFAULT 0,

    win_rate DECIMAL(5, 4),
    wilson_lower_bound DECIMAL(5, 4),
    profit_factor DECIMAL(8, 4),
    expectancy DECIMAL(18, 4),
    avg_win DECIMAL(18, 4),
    avg_loss DECIMAL(18, 4),
    avg_trade DECIMAL(18, 4),
    max_drawdown DECIMAL(8, 4),
    sharpe_ratio DECIMAL(8, 4),

    first_trade_at TIMESTAMPTZ,
    last_trade_at TIMESTAMPTZ,

    created_at TIMESTAMPTZ DEFAULT NOW(),
    updated_at TIMESTAMPTZ DEFAULT NOW(),

    UNIQUE (strategy_id, regime, timeframe)
);

CREATE INDEX idx_regime_performance_stats_regime ON regime_performance_stats (regime, timeframe);

CREATE TABLE improvement_events (
    id BIGSERIAL PRIMARY KEY,

    event_type VARCHAR(30) NOT NULL,  -- 'model_deployed', 'params_optimized', 'strategy_disabled'
    event_timestamp TIMESTAMPTZ DEFAULT NOW(),

    -- What changed
    component_type VARCHAR(30) NOT NULL,  -- 'model', 'strategy', 'risk_params', 'feature'
    component_id VARCHAR(50) NOT NULL,
    old_value JSONB,
    new_value JSONB,

    -- Why it changed
    trigger_reason VARCHAR(100),  -- 'performance_degradation', 'scheduled_retrain', 'manual_override'
    performance_before JSONB,
    performance_after JSONB,
    improvement_metrics JSONB,

    -- Approval
    automated BOOLEAN DEFAULT TRUE,
    approved_by VARCHAR(50),  -- NULL if automated
    approval_timestamp TIMESTAMPTZ,

    -- Rollback info
    can_rollback BOOLEAN DEFAULT TRUE,
    rollback_timestamp TIMESTAMPTZ,

    -- Notifications
    discord_notified BOOLEAN DEFAULT FALSE,
    notification_message_id VARCHAR(100),

    created_at TIMESTAMPTZ DEFAULT NOW()
);

CREATE INDEX idx_improvement_events_type ON improvement_events (event_type, event_timestamp DESC);
CREATE INDEX idx_improvement_events_component ON improvement_events (component_type, component_id);

CREATE TABLE ab_tests (
    id BIGSERIAL PRIMARY KEY,

    test_id UUID NOT NULL UNIQUE,
    test_name VARCHAR(100) NOT NULL,

    -- Test Configuration
    control_version VARCHAR(20) NOT NULL,
    treatment_version VARCHAR(20) NOT NULL,
    test_type VARCHAR(20) NOT NULL CHECK (test_type IN ('model', 'strategy', 'params')),

    -- Traffic Split
    control_traffic_percent INTEGER NOT NULL CHECK (control_traffic_percent BETWEEN 0 AND 100),
    treatment_traffic_percent INTEGER NOT NULL CHECK (treatment_traffic_percent BETWEEN 0 AND 100),

    -- Duration
    started_at TIMESTAMPTZ NOT NULL,
    ended_at TIMESTAMPTZ,
    scheduled_duration_hours INTEGER DEFAULT 48,

    -- Success Criteria
    success_metric VARCHAR(50) NOT NULL,  -- 'sharpe_ratio', 'win_rate', 'profit_factor'
    minimum_improvement_percent DECIMAL(5, 2) DEFAULT 5.0,

    -- Results
    control_metrics JSONB,
    treatment_metrics JSONB,
    improvement_percent DECIMAL(6, 2),

    -- Outcome
    status VARCHAR(20) DEFAULT 'running' CHECK (status IN ('running', 'promoted', 'rejected', 'rollback')),
    conclusion VARCHAR(200),

    created_at TIMESTAMPTZ DEFAULT NOW(),
    updated_at TIMESTAMPTZ DEFAULT NOW()
);

CREATE INDEX idx_ab_tests_status ON ab_tests (status);
CREATE INDEX idx_ab_tests_running ON ab_tests (status, started_at) WHERE status = 'running';

CREATE TABLE optimization_queue (
    id BIGSERIAL PRIMARY KEY,

    task_type VARCHAR(30) NOT NULL,  -- 'hyperparameter', 'feature_selection', 'strategy_weights'
    component_id VARCHAR(50) NOT NULL,

    -- Schedule
    frequency VARCHAR(20) NOT NULL,  -- 'hourly', 'daily', 'weekly'
    last_run_at TIMESTAMPTZ,
    next_run_at TIMESTAMPTZ NOT NULL,

    -- Execution
    status VARCHAR(20) DEFAULT 'pending' CHECK (status IN ('pending', 'running', 'completed', 'failed')),
    priority INTEGER DEFAULT 5,  -- 1 = highest

    -- Results
    last_result JSONB,
    last_error TEXT,
    consecutive_failures INTEGER DEFAULT 0,

    -- Configuration
    config JSONB NOT NULL,  -- task-specific parameters

    enabled BOOLEAN DEFAULT TRUE,
    created_at TIMESTAMPTZ DEFAULT NOW(),
    updated_at TIMESTAMPTZ DEFAULT NOW()
);

CREATE INDEX idx_optimization_queue_next_run ON optimization_queue (next_run_at) WHERE enabled = TRUE AND status = 'pending';
CREATE INDEX idx_optimization_queue_status ON optimization_queue (status);
