-- Aggregates: hourly and daily candles from the 1-minute market_conditions rows, and
-- daily trading statistics per symbol from trade_outcomes (seed 002
-- mv_daily_trading_stats).
--
-- TimescaleDB: continuous aggregates with refresh policies, real time
-- (materialized_only = false: the newest buckets are computed at query time from the
-- raw rows). PostgreSQL: materialized views of the same names and columns, each with a
-- unique index so that `tickwire maintain` can REFRESH ... CONCURRENTLY them.
--
-- Buckets are UTC hours and UTC days ("bucket" is the bucket's start). open/close are
-- the first/last 1m bar's by time; volume is the sum; bar_count the number of 1m bars.
-- Only timeframe '1m' rows are aggregated: the base timeframe the stream resamples from.
-- mv_daily_trading_stats buckets trades by the UTC day of entry_time (the hypertable's
-- time column); pnl figures count closed trades, open_trades those still open.

-- @timescaledb
CREATE MATERIALIZED VIEW candles_1h
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT symbol,
       time_bucket(INTERVAL '1 hour', "timestamp") AS bucket,
       first(open, "timestamp") AS open,
       max(high) AS high,
       min(low) AS low,
       last(close, "timestamp") AS close,
       sum(volume) AS volume,
       count(*) AS bar_count
  FROM market_conditions
 WHERE timeframe = '1m'
 GROUP BY symbol, time_bucket(INTERVAL '1 hour', "timestamp")
WITH NO DATA;
SELECT add_continuous_aggregate_policy('candles_1h', start_offset => INTERVAL '3 days',
                                       end_offset => INTERVAL '1 hour', schedule_interval => INTERVAL '30 minutes');

CREATE MATERIALIZED VIEW candles_1d
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT symbol,
       time_bucket(INTERVAL '1 day', "timestamp") AS bucket,
       first(open, "timestamp") AS open,
       max(high) AS high,
       min(low) AS low,
       last(close, "timestamp") AS close,
       sum(volume) AS volume,
       count(*) AS bar_count
  FROM market_conditions
 WHERE timeframe = '1m'
 GROUP BY symbol, time_bucket(INTERVAL '1 day', "timestamp")
WITH NO DATA;
SELECT add_continuous_aggregate_policy('candles_1d', start_offset => INTERVAL '7 days',
                                       end_offset => INTERVAL '1 hour', schedule_interval => INTERVAL '1 hour');

CREATE MATERIALIZED VIEW mv_daily_trading_stats
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT symbol,
       time_bucket(INTERVAL '1 day', entry_time) AS bucket,
       count(*) AS total_trades,
       count(*) FILTER (WHERE outcome_type = 'OPEN') AS open_trades,
       count(*) FILTER (WHERE outcome_type = 'WIN') AS winning_trades,
       count(*) FILTER (WHERE outcome_type = 'LOSS') AS losing_trades,
       count(*) FILTER (WHERE outcome_type = 'BREAKEVEN') AS breakeven_trades,
       sum(quantity) AS total_quantity,
       sum(gross_pnl) FILTER (WHERE outcome_type <> 'OPEN') AS gross_pnl,
       sum(net_pnl) FILTER (WHERE outcome_type <> 'OPEN') AS net_pnl,
       sum(commission) AS total_commission,
       avg(net_pnl) FILTER (WHERE outcome_type <> 'OPEN') AS avg_net_pnl,
       max(net_pnl) FILTER (WHERE outcome_type <> 'OPEN') AS best_net_pnl,
       min(net_pnl) FILTER (WHERE outcome_type <> 'OPEN') AS worst_net_pnl,
       avg(duration_seconds) FILTER (WHERE outcome_type <> 'OPEN') AS avg_duration_seconds
  FROM trade_outcomes
 GROUP BY symbol, time_bucket(INTERVAL '1 day', entry_time)
WITH NO DATA;
SELECT add_continuous_aggregate_policy('mv_daily_trading_stats', start_offset => INTERVAL '35 days',
                                       end_offset => INTERVAL '1 hour', schedule_interval => INTERVAL '1 hour');

-- @postgres
CREATE MATERIALIZED VIEW candles_1h AS
SELECT symbol,
       date_bin(INTERVAL '1 hour', "timestamp", TIMESTAMPTZ '2000-01-01 00:00:00+00') AS bucket,
       (array_agg(open ORDER BY "timestamp"))[1] AS open,
       max(high) AS high,
       min(low) AS low,
       (array_agg(close ORDER BY "timestamp" DESC))[1] AS close,
       sum(volume) AS volume,
       count(*) AS bar_count
  FROM market_conditions
 WHERE timeframe = '1m'
 GROUP BY 1, 2;
CREATE UNIQUE INDEX candles_1h_symbol_bucket ON candles_1h (symbol, bucket);

CREATE MATERIALIZED VIEW candles_1d AS
SELECT symbol,
       date_bin(INTERVAL '1 day', "timestamp", TIMESTAMPTZ '2000-01-01 00:00:00+00') AS bucket,
       (array_agg(open ORDER BY "timestamp"))[1] AS open,
       max(high) AS high,
       min(low) AS low,
       (array_agg(close ORDER BY "timestamp" DESC))[1] AS close,
       sum(volume) AS volume,
       count(*) AS bar_count
  FROM market_conditions
 WHERE timeframe = '1m'
 GROUP BY 1, 2;
CREATE UNIQUE INDEX candles_1d_symbol_bucket ON candles_1d (symbol, bucket);

CREATE MATERIALIZED VIEW mv_daily_trading_stats AS
SELECT symbol,
       date_bin(INTERVAL '1 day', entry_time, TIMESTAMPTZ '2000-01-01 00:00:00+00') AS bucket,
       count(*) AS total_trades,
       count(*) FILTER (WHERE outcome_type = 'OPEN') AS open_trades,
       count(*) FILTER (WHERE outcome_type = 'WIN') AS winning_trades,
       count(*) FILTER (WHERE outcome_type = 'LOSS') AS losing_trades,
       count(*) FILTER (WHERE outcome_type = 'BREAKEVEN') AS breakeven_trades,
       sum(quantity) AS total_quantity,
       sum(gross_pnl) FILTER (WHERE outcome_type <> 'OPEN') AS gross_pnl,
       sum(net_pnl) FILTER (WHERE outcome_type <> 'OPEN') AS net_pnl,
       sum(commission) AS total_commission,
       avg(net_pnl) FILTER (WHERE outcome_type <> 'OPEN') AS avg_net_pnl,
       max(net_pnl) FILTER (WHERE outcome_type <> 'OPEN') AS best_net_pnl,
       min(net_pnl) FILTER (WHERE outcome_type <> 'OPEN') AS worst_net_pnl,
       avg(duration_seconds) FILTER (WHERE outcome_type <> 'OPEN') AS avg_duration_seconds
  FROM trade_outcomes
 GROUP BY 1, 2;
CREATE UNIQUE INDEX mv_daily_trading_stats_symbol_bucket ON mv_daily_trading_stats (symbol, bucket);
