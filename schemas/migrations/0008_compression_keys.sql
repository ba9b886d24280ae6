-- TimescaleDB compression settings that hold every column of each table's unique key
-- (TimescaleDB warns otherwise: an upsert that meets a compressed chunk can then narrow
-- the batches it decompresses by segment and by the order columns' min/max instead of
-- decompressing every batch of the time range):
--   * trade_outcomes, model_predictions: still segmented by symbol and ordered by time
--     (seed layout), the trade/prediction id added as a second order column;
--   * correlation_group_members, correlation_conflicts: timeframe and window_bars (a few
--     values each) join the segment-by columns.
-- Settings changed here apply to chunks compressed from now on; chunks already
-- compressed keep theirs. Nothing to do on plain PostgreSQL.

-- @timescaledb
ALTER TABLE trade_outcomes SET (
    timescaledb.compress_segmentby = 'symbol',
    timescaledb.compress_orderby = 'entry_time DESC, trade_id'
);
ALTER TABLE model_predictions SET (
    timescaledb.compress_segmentby = 'symbol',
    timescaledb.compress_orderby = 'predicted_at DESC, prediction_id'
);
ALTER TABLE correlation_group_members SET (
    timescaledb.compress_segmentby = 'symbol, timeframe, window_bars',
    timescaledb.compress_orderby = '"timestamp" DESC'
);
ALTER TABLE correlation_conflicts SET (
    timescaledb.compress_segmentby = 'symbol_a, timeframe, window_bars',
    timescaledb.compress_orderby = '"timestamp" DESC, symbol_b'
);
