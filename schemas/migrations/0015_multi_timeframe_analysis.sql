-- multi_timeframe_analysis (seed 000: MultiTimeframeAnalysis): per symbol, each time a bar
-- above the base timeframe closes, the trend on every timeframe (direction, strength and
-- regime, JSONB keyed by timeframe: the set of timeframes is a setting), their alignment
-- score and the dominant direction (definitions in streams/mtf.py). "timestamp" is the
-- close of the bars that triggered it: the analysis holds from then on, so an as-of join
-- (the latest row at or before t) gives what a strategy knew at t.
-- About 17 rows a symbol an hour with the default timeframes: one-day chunks (TimescaleDB),
-- compressed after 7 days and kept a year; monthly partitions on PostgreSQL, which
-- `tickwire maintain` trims to the same year.

CREATE TABLE multi_timeframe_analysis (
    symbol VARCHAR(10) NOT NULL,
    "timestamp" TIMESTAMPTZ NOT NULL,
    trigger_timeframe VARCHAR(5) NOT NULL,
    timeframes JSONB NOT NULL,  -- {"1h": {"direction": "up", "strength": 0.62, "regime": "trending_up"}, ...}
    alignment_score DOUBLE PRECISION NOT NULL CHECK (alignment_score BETWEEN -1 AND 1),
    dominant_direction VARCHAR(4) NOT NULL CHECK (dominant_direction IN ('up', 'down', 'flat')),
    agreeing_timeframes INTEGER NOT NULL CHECK (agreeing_timeframes >= 0),
    timeframe_count INTEGER NOT NULL CHECK (timeframe_count >= agreeing_timeframes),
    created_at TIMESTAMPTZ DEFAULT NOW(),
    UNIQUE (symbol, "timestamp")
) /* partition_by("timestamp") */;

CREATE INDEX idx_multi_timeframe_analysis_aligned ON multi_timeframe_analysis ("timestamp" DESC, alignment_score);

-- @timescaledb
SELECT create_hypertable('multi_timeframe_analysis', 'timestamp', chunk_time_interval => INTERVAL '1 day');
ALTER TABLE multi_timeframe_analysis SET (
    timescaledb.compress,
    timescaledb.compress_segmentby = 'symbol',
    timescaledb.compress_orderby = '"timestamp" DESC'
);
SELECT add_compression_policy('multi_timeframe_analysis', compress_after => INTERVAL '7 days');
SELECT add_retention_policy('multi_timeframe_analysis', drop_after => INTERVAL '1 year');

-- @postgres
CREATE TABLE multi_timeframe_analysis_default PARTITION OF multi_timeframe_analysis DEFAULT;
SELECT tickwire_ensure_monthly_partitions('multi_timeframe_analysis', ((now() AT TIME ZONE 'UTC') - INTERVAL '1 month')::date,
                                          ((now() AT TIME ZONE 'UTC') + INTERVAL '3 months')::date);
