-- Bars of a day or longer get a table of their own; market_conditions becomes the view
-- over both, so readers keep seed 001's table and columns.
--
-- Why: one hypertable has one chunk interval. A day suits 1m bars (10,000 symbols make
-- 14.4M rows a day) and is absurd for daily bars: 25 years of them made ~9,000 chunks of a
-- few hundred rows, a backfill batch locked thousands of chunks at once ("out of shared
-- memory"), and seed 001's 2-year retention dropped the history an analyst replays.
--   * market_conditions_intraday (the former table, renamed; its partitions too):
--     minute and hour timeframes, one-day chunks (monthly partitions on plain
--     PostgreSQL), compressed after 7 days, kept 2 years (seed 001);
--   * market_conditions_daily: timeframes in days, one-year chunks, compressed 30 days
--     after a chunk's year ends, kept without limit (25 years x 10,000 symbols is 63M
--     rows). On plain PostgreSQL it is not partitioned: nothing in it expires, and one
--     B-tree serves a symbol's years.
-- Sinks write each row to its table by timeframe (schemas/tables.py). Each table's CHECK
-- says which timeframes it holds; the intraday table also names the day timeframes one
-- by one, which is what lets the planner skip all its chunks for a query on
-- timeframe = '1d' (it cannot prove that from a LIKE). ids stay unique across the view:
-- both tables draw on market_conditions_id_seq. Rows of day timeframes already stored
-- move to the daily table here; candles_1h/candles_1d keep reading the 1m rows (the
-- intraday table).

ALTER TABLE market_conditions RENAME TO market_conditions_intraday;
CREATE TABLE market_conditions_daily (
    LIKE market_conditions_intraday INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING INDEXES INCLUDING COMMENTS
);

INSERT INTO market_conditions_daily SELECT * FROM market_conditions_intraday WHERE timeframe LIKE '%d';
DELETE FROM market_conditions_intraday WHERE timeframe LIKE '%d';
ALTER TABLE market_conditions_intraday
    ADD CONSTRAINT market_conditions_intraday_timeframe CHECK (timeframe NOT LIKE '%d'),
    ADD CONSTRAINT market_conditions_intraday_not_daily CHECK (timeframe NOT IN ('1d', '2d', '3d', '4d', '5d', '6d', '7d'));
ALTER TABLE market_conditions_daily ADD CONSTRAINT market_conditions_daily_timeframe CHECK (timeframe LIKE '%d');

CREATE VIEW market_conditions AS
SELECT id, symbol, timeframe, "timestamp", open, high, low, close, volume, vwap, atr_14, rsi_14, ema_20, ema_50,
       bb_upper, bb_middle, bb_lower, macd_line, macd_signal, macd_hist, adx_14, plus_di_14, minus_di_14,
       volatility_20d, vix, detected_regime, regime_confidence, spy_correlation, sector_correlation, created_at
  FROM market_conditions_intraday
UNION ALL
SELECT id, symbol, timeframe, "timestamp", open, high, low, close, volume, vwap, atr_14, rsi_14, ema_20, ema_50,
       bb_upper, bb_middle, bb_lower, macd_line, macd_signal, macd_hist, adx_14, plus_di_14, minus_di_14,
       volatility_20d, vix, detected_regime, regime_confidence, spy_correlation, sector_correlation, created_at
  FROM market_conditions_daily;
COMMENT ON VIEW market_conditions IS
    'every bar and timeframe (seed 001): market_conditions_intraday (minutes, hours) and market_conditions_daily (days)';

-- @timescaledb
SELECT create_hypertable('market_conditions_daily', 'timestamp', chunk_time_interval => INTERVAL '365 days', migrate_data => true);
ALTER TABLE market_conditions_daily SET (
    timescaledb.compress,
    timescaledb.compress_segmentby = 'symbol, timeframe',
    timescaledb.compress_orderby = '"timestamp" DESC'
);
SELECT add_compression_policy('market_conditions_daily', compress_after => INTERVAL '30 days');

-- @postgres
DO $$
DECLARE
    child text;
BEGIN
    FOR child IN
        SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
         WHERE i.inhparent = 'market_conditions_intraday'::regclass
    LOOP
        EXECUTE format('ALTER TABLE %I RENAME TO %I', child,
                       'market_conditions_intraday' || substr(child, length('market_conditions') + 1));
    END LOOP;
END $$;
