-- trade_outcomes.direction becomes VARCHAR(5): seed 001 declares it VARCHAR(4) with
-- CHECK (direction IN ('LONG', 'SHORT')), and 'SHORT' has five characters, so no short
-- trade could ever be stored. Widening a VARCHAR rewrites nothing.
--
-- TimescaleDB refuses to change a column's type while the hypertable has compressed
-- chunks: they are decompressed first (none can hold a short trade); the compression
-- policy compresses them again on its next run.

-- @timescaledb
SELECT count(decompress_chunk(c, if_compressed => true)) FROM show_chunks('trade_outcomes') c;
ALTER TABLE trade_outcomes ALTER COLUMN direction TYPE VARCHAR(5);

-- @postgres
ALTER TABLE trade_outcomes ALTER COLUMN direction TYPE VARCHAR(5);
