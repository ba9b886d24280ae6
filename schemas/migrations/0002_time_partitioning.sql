-- Life cycle of time-partitioned tables.
--
-- TimescaleDB: market_conditions (a hypertable since 0001) gets columnstore compression
-- (segment by symbol and timeframe, the leading columns of its row identity; order by
-- time) and the seed 001 retention of 2 years.
--
-- Plain PostgreSQL: the monthly partition helper of 0001 is replaced (same signature)
-- by one that
--   * computes month bounds in UTC whatever the session's TimeZone (0001's version
--     cast a date to timestamptz in the session time zone, so a session outside UTC
--     would have asked for overlapping bounds);
--   * can create a month whose rows already sit in the DEFAULT partition: they are
--     moved into the new partition in the same transaction (otherwise PostgreSQL
--     refuses the new partition);
-- and tickwire_maintain_partitions(parent, months_ahead) is what `tickwire maintain`
-- (sinks/maintenance.py) runs for every partitioned table: split every month found
-- in the DEFAULT partition out into its own partition, then create the partitions
-- of the current month and the next months_ahead months.

-- @timescaledb
ALTER TABLE market_conditions SET (
    timescaledb.compress,
    timescaledb.compress_segmentby = 'symbol, timeframe',
    timescaledb.compress_orderby = '"timestamp" DESC'
);
SELECT add_compression_policy('market_conditions', compress_after => INTERVAL '7 days');
SELECT add_retention_policy('market_conditions', drop_after => INTERVAL '2 years');

-- @postgres
CREATE OR REPLACE FUNCTION tickwire_ensure_monthly_partitions(parent regclass, first_month date, last_month date)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    month date := date_trunc('month', first_month::timestamp)::date;
    created integer := 0;
    child text;
    key text;
    default_part regclass;
    lo timestamptz;
    hi timestamptz;
    occupied boolean;
BEGIN
    SELECT a.attname, nullif(p.partdefid, 0)::regclass INTO key, default_part
      FROM pg_partitioned_table p
      JOIN pg_attribute a ON a.attrelid = p.partrelid AND a.attnum = p.partattrs[0]
     WHERE p.partrelid = parent;
    IF key IS NULL THEN
        RAISE EXCEPTION '% is not a partitioned table', parent;
    END IF;
    WHILE month <= last_month LOOP
        child := format('%s_p%s', parent::text, to_char(month, 'YYYYMM'));
        IF to_regclass(child) IS NULL THEN
            lo := month::timestamp AT TIME ZONE 'UTC';
            hi := (month + INTERVAL '1 month')::timestamp AT TIME ZONE 'UTC';
            occupied := false;
            IF default_part IS NOT NULL THEN
                EXECUTE format('SELECT EXISTS (SELECT 1 FROM %s WHERE %I >= $1 AND %I < $2)', default_part, key, key)
                   INTO occupied USING lo, hi;
            END IF;
            IF occupied THEN
                EXECUTE format('CREATE TABLE %I (LIKE %s INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING STORAGE)',
                               child, parent);
                EXECUTE format('WITH moved AS (DELETE FROM %s WHERE %I >= $1 AND %I < $2 RETURNING *) '
                               'INSERT INTO %I SELECT * FROM moved', default_part, key, key, child)
                   USING lo, hi;
                EXECUTE format('ALTER TABLE %s ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)', parent, child, lo, hi);
            ELSE
                EXECUTE format('CREATE TABLE %I PARTITION OF %s FOR VALUES FROM (%L) TO (%L)', child, parent, lo, hi);
            END IF;
            created := created + 1;
        END IF;
        month := (month + INTERVAL '1 month')::date;
    END LOOP;
    RETURN created;
END $$;

CREATE OR REPLACE FUNCTION tickwire_maintain_partitions(parent regclass, months_ahead integer DEFAULT 3)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    key text;
    default_part regclass;
    months date[];
    m date;
    today date := (now() AT TIME ZONE 'UTC')::date;
    created integer := 0;
BEGIN
    SELECT a.attname, nullif(p.partdefid, 0)::regclass INTO key, default_part
      FROM pg_partitioned_table p
      JOIN pg_attribute a ON a.attrelid = p.partrelid AND a.attnum = p.partattrs[0]
     WHERE p.partrelid = parent;
    IF key IS NULL THEN
        RAISE EXCEPTION '% is not a partitioned table', parent;
    END IF;
    IF default_part IS NOT NULL THEN
        EXECUTE format('SELECT array_agg(DISTINCT date_trunc(''month'', %I AT TIME ZONE ''UTC'')::date) FROM %s',
                       key, default_part) INTO months;
        FOREACH m IN ARRAY coalesce(months, '{}') LOOP
            created := created + tickwire_ensure_monthly_partitions(parent, m, m);
        END LOOP;
    END IF;
    RETURN created + tickwire_ensure_monthly_partitions(parent, today, (today + make_interval(months => months_ahead))::date);
END $$;
