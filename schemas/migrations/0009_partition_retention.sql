-- Retention on plain PostgreSQL, the counterpart of TimescaleDB's retention policies
-- (seed 001: market_conditions 2 years, trade_outcomes 5 years, model_predictions 3
-- years; sinks/maintenance.py holds that table). Like a retention policy drops whole
-- chunks, tickwire_drop_expired_partitions(parent, keep) drops whole monthly partitions
-- (named <parent>_pYYYYMM by tickwire_ensure_monthly_partitions) whose every row is
-- older than now() - keep, and returns their names. The DEFAULT partition is never
-- dropped: `tickwire maintain` first moves its rows into monthly partitions.
-- Nothing to do on TimescaleDB (add_retention_policy in 0002 and 0003).

-- @postgres
CREATE OR REPLACE FUNCTION tickwire_drop_expired_partitions(parent regclass, keep interval)
RETURNS text[] LANGUAGE plpgsql AS $$
DECLARE
    cutoff timestamptz := now() - keep;
    child record;
    dropped text[] := '{}';
BEGIN
    FOR child IN
        SELECT c.oid::regclass AS rel, c.relname,
               to_date(substring(c.relname FROM '_p(\d{6})$'), 'YYYYMM') AS month
          FROM pg_inherits i
          JOIN pg_class c ON c.oid = i.inhrelid
         WHERE i.inhparent = parent
           AND c.relname = (SELECT relname FROM pg_class WHERE oid = parent) || '_p' || substring(c.relname FROM '_p(\d{6})$')
         ORDER BY month
    LOOP
        -- the partition's upper bound, in UTC like the bounds themselves
        IF ((child.month + INTERVAL '1 month')::timestamp AT TIME ZONE 'UTC') <= cutoff THEN
            EXECUTE format('DROP TABLE %s', child.rel);
            dropped := dropped || child.relname::text;
        END IF;
    END LOOP;
    RETURN dropped;
END $$;
