#!/usr/bin/env bash
# A PostgreSQL cluster from Debian's packages in var/pg, on its own port.
# Usage: postgres.sh install|start|stop|status        (port: TICKWIRE_LOCAL_PG_PORT)
# Creates the owner role "tickwire" (password in var/pg/password), database "tickwire", and
# the sinks' role "tickwire_sink" (password in var/pg/sink_password).
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
PGDIR="$VAR/pg"
DATA="$PGDIR/data"
SOCK="$PGDIR/run"

bindir() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1; }

install() {
    [ -n "$(bindir)" ] && [ -x "$(bindir)/initdb" ] || apt_install postgresql postgresql-contrib
}

# The server refuses to run as root: run its tools as the "postgres" account then.
pg() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

running() { [ -f "$DATA/postmaster.pid" ] && pg "$(bindir)/pg_ctl" -D "$DATA" status >/dev/null 2>&1; }

start() {
    install
    mkdir -p "$PGDIR" "$SOCK"
    if [ "$(id -u)" = 0 ]; then
        chown postgres "$PGDIR" "$SOCK"
        # The postgres account must be able to reach var/pg through the checkout's parents.
        runuser -u postgres -- test -x "$PGDIR" || die "user postgres cannot enter $PGDIR (check parent directory permissions)"
    fi
    if [ ! -f "$DATA/PG_VERSION" ]; then
        say "initialising a PostgreSQL cluster in $DATA"
        [ -f "$PGDIR/password" ] || (umask 077; head -c 24 /dev/urandom | base64 | tr -d '/+=' >"$PGDIR/password")
        local pwfile="$PGDIR/.initpw"
        (umask 077; cp "$PGDIR/password" "$pwfile")
        [ "$(id -u)" = 0 ] && chown postgres "$pwfile"
        pg "$(bindir)/initdb" -D "$DATA" -U tickwire --pwfile="$pwfile" -A scram-sha-256 -E UTF8 --locale=C.UTF-8 >>"$LOGS/postgres.log" 2>&1 \
            || { rm -f "$pwfile"; die "initdb failed, see $LOGS/postgres.log"; }
        rm -f "$pwfile"
        cat >>"$DATA/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
unix_socket_directories = '$SOCK'
max_connections = 100
shared_buffers = 512MB
synchronous_commit = on
timezone = 'UTC'
CONF
    fi
    if running; then say "postgres already running on 127.0.0.1:$PG_PORT"; return; fi
    say "starting postgres on 127.0.0.1:$PG_PORT (log: $LOGS/postgres.log)"
    touch "$LOGS/postgres.log"; [ "$(id -u)" = 0 ] && chown postgres "$LOGS/postgres.log"
    # A write locks every chunk or partition it touches: a backfill of years of bars touches
    # thousands (the default 64 per connection ran out: "out of shared memory"). Given at
    # start, so a cluster made before this line gets it too.
    local opts="-p $PG_PORT -c max_locks_per_transaction=512"
    # TimescaleDB is used when its library is installed (it is in no package registry here),
    # unless TICKWIRE_LOCAL_TIMESCALEDB=off asks for plain PostgreSQL.
    # TimescaleDB runs its policies as background workers: give them room beside the default 8.
    # A local stack sends no telemetry (TimescaleDB reports home by default).
    [ "${TICKWIRE_LOCAL_TIMESCALEDB:-auto}" != off ] && [ -f "$("$(bindir)/pg_config" --pkglibdir)/timescaledb.so" ] \
        && opts="$opts -c shared_preload_libraries=timescaledb -c max_worker_processes=32 -c timescaledb.telemetry_level=off"
    pg "$(bindir)/pg_ctl" -D "$DATA" -o "$opts" -l "$LOGS/postgres.log" -w -t 60 start >/dev/null \
        || die "postgres did not start, see $LOGS/postgres.log"
    PGPASSWORD="$(cat "$PGDIR/password")" "$(bindir)/psql" -h 127.0.0.1 -p "$PG_PORT" -U tickwire -d postgres -qAtc \
        "SELECT 1 FROM pg_database WHERE datname = 'tickwire'" | grep -q 1 \
        || PGPASSWORD="$(cat "$PGDIR/password")" "$(bindir)/createdb" -h 127.0.0.1 -p "$PG_PORT" -U tickwire tickwire
    # The sinks' least-privilege role (tickwire grant-sink gives it its rows); its password
    # goes to psql through the environment, never on a command line.
    [ -f "$PGDIR/sink_password" ] || (umask 077; head -c 24 /dev/urandom | base64 | tr -d '/+=' >"$PGDIR/sink_password")
    SINK_PASSWORD="$(cat "$PGDIR/sink_password")" PGPASSWORD="$(cat "$PGDIR/password")" "$(bindir)/psql" -h 127.0.0.1 \
        -p "$PG_PORT" -U tickwire -d tickwire -qAt -v ON_ERROR_STOP=1 >/dev/null <<'SQL' || die "cannot create the role tickwire_sink"
\getenv password SINK_PASSWORD
SELECT format('CREATE ROLE tickwire_sink LOGIN PASSWORD %L', :'password')
 WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'tickwire_sink') \gexec
SQL
}

stop() {
    if running; then
        say "stopping postgres"
        pg "$(bindir)/pg_ctl" -D "$DATA" -m fast -w -t 60 stop >/dev/null
    fi
}

status() { if running; then echo "postgres: running on 127.0.0.1:$PG_PORT"; else echo "postgres: stopped"; return 3; fi; }

case "${1:-}" in
    install|start|stop|status) "$1" ;;
    *) die "usage: postgres.sh install|start|stop|status" ;;
esac
