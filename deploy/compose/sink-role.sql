-- The role docker-compose.yml's sinks connect as: created if missing, its password set from
-- the pg_sink_password secret on every start, so a changed PG_SINK_PASSWORD takes effect.
-- No privileges here: `tickwire grant-sink tickwire_sink` gives it rows and no DDL.
\set ON_ERROR_STOP on
\set password `cat /run/secrets/pg_sink_password`
SELECT 'CREATE ROLE tickwire_sink LOGIN' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'tickwire_sink')
\gexec
ALTER ROLE tickwire_sink PASSWORD :'password';
