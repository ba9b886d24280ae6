"""The ``tickwire`` command line: the composition root that wires cores, topics and sinks.

This is the one module of ``streams`` that imports ``sinks``: it starts processes, it
computes nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib.metadata
import logging
import logging.config
import os
import re
import signal
import socket
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from tickwire.schemas.errors import TickwireError, Unreachable, UsageError
from tickwire.schemas.metrics import Metrics, serve
from tickwire.schemas.settings import Settings, SettingsError
from tickwire.streams.jsonlog import logging_config
from tickwire.streams.topics import ensure_topics, partition_changes

log = logging.getLogger("tickwire")
ROOT = Path(__file__).resolve().parent.parent
LOCAL = ROOT / "deploy" / "local"


# The packages each extra of pyproject.toml brings: a command run without its extra says which.
EXTRAS = {"faust": "worker", "numpy": "worker", "numba": "worker", "asyncpg": "sink", "pyarrow": "replay"}


class CommandError(TickwireError):
    """A command cannot go on; its message says why."""


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    _use_uvloop()
    gc.freeze()  # what is loaded by now lives as long as the process: the collector need not scan it
    try:
        settings = Settings.from_env(_before_start() if args.command == "run" and not args.no_services else None)
        logging.config.dictConfig(logging_config(settings.log_level))
        return args.func(settings, args) or 0
    except TickwireError as exc:
        print(f"tickwire: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, (SettingsError, UsageError)) else 1
    except ModuleNotFoundError as exc:
        extra = EXTRAS.get((exc.name or "").partition(".")[0])
        if extra is None:
            raise
        print(f"tickwire: {args.command} needs {exc.name}, from the '{extra}' extra: pip install 'tickwire[{extra}]'",
              file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _use_uvloop() -> None:
    """uvloop's tasks and futures cost about half of asyncio's: faust makes a few per message."""
    try:
        import uvloop
    except ImportError:  # not built for this platform: asyncio's own loop
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tickwire", description="Tickwire: streaming market data and signals from Kafka into TimescaleDB/PostgreSQL.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {importlib.metadata.version('tickwire')}")
    sub = parser.add_subparsers(required=True, metavar="COMMAND", dest="command")

    p = sub.add_parser("run", help="start local Kafka and PostgreSQL, migrate, and run simulator, worker and sink")
    p.add_argument("--symbols", type=_positive, default=8, help="simulated symbols (default 8)")
    p.add_argument("--rate", type=_positive_float, default=20.0, help="simulated bars per second (default 20)")
    p.add_argument("--no-services", action="store_true", help="use already running Kafka/PostgreSQL (TICKWIRE_* settings)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("stop", help="stop a running 'tickwire run' and the local services it started")
    p.set_defaults(func=cmd_stop)

    p = sub.add_parser("migrate", help="apply pending SQL migrations (TimescaleDB when present)")
    p.set_defaults(func=lambda s, a: asyncio.run(_migrate(s)))

    p = sub.add_parser("maintain", help="create future partitions, apply retention, refresh views (PostgreSQL); report jobs (TimescaleDB)")
    p.add_argument("--months-ahead", type=_positive, default=3, help="monthly partitions to keep ready ahead (default 3)")
    p.add_argument("--no-retention", action="store_true", help="keep partitions older than the seed retention")
    p.add_argument("--every", type=_positive_float, help="keep running: maintain again every this many seconds (a service)")
    p.add_argument("--metrics-port", type=int, help="with --every: serve /metrics here (default: TICKWIRE_METRICS_PORT)")
    p.set_defaults(func=cmd_maintain)

    p = sub.add_parser("grant-sink", help="grant a role the least privileges a sink needs (rows, no DDL)")
    p.add_argument("role", help="an existing PostgreSQL role")
    p.set_defaults(func=lambda s, a: asyncio.run(_grant(s, a.role)))

    p = sub.add_parser("export", help="write trades or strategy performance to CSV (UTF-8, with a header)")
    p.add_argument("kind", choices=("trades", "performance"), help="trade_outcomes or strategy_performance")
    p.add_argument("--strategy", help="only this strategy_id")
    p.add_argument("--since", help="from this time on (ISO 8601; UTC unless it says otherwise)")
    p.add_argument("--until", help="before this time (ISO 8601)")
    p.add_argument("--period", help="performance only: DAY, WEEK or MONTH")
    p.add_argument("--output", "-o", default="-", help="file to write, - for standard output (default)")
    p.set_defaults(func=lambda s, a: asyncio.run(_export(s, a)))

    p = sub.add_parser("topics", help="create the registry's topics if they are missing; report how existing ones differ")
    p.set_defaults(func=cmd_topics)

    p = sub.add_parser("schemas", help="write a JSON Schema per message type and one AsyncAPI document for consumers and producers")
    p.add_argument("--out", default="contract", help="directory to write them into (created; default ./contract)")
    p.set_defaults(func=cmd_schemas)

    p = sub.add_parser("simulate", help="publish simulated bars, and a toy strategy's predictions and fills")
    p.add_argument("--symbols", type=_positive, default=50, help="number of symbols (default 50)")
    p.add_argument("--bars", type=int, default=0, help="bars per symbol, 0 = until stopped (default 0)")
    p.add_argument("--rate", type=_positive_float, default=0.0, help="bars per second, 0 = as fast as possible")
    p.add_argument("--seed", type=int, default=42, help="random seed (default 42)")
    p.add_argument("--start", type=_utc_time, help="event time of the first bar, ISO 8601 (default: 30 days ago)")
    p.add_argument("--no-signals", dest="signals", action="store_false", help="bars only: no predictions and fills from the toy strategy")
    p.add_argument("--timeframe", type=_timeframe, help="bar timeframe (default TICKWIRE_BASE_TIMEFRAME; the worker resamples from that one)")
    p.add_argument("--metrics-port", type=int, help="serve /metrics here (default: TICKWIRE_METRICS_PORT)")
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("replay", help="publish the rows of a CSV or Parquet file to their topic, validated")
    p.add_argument("file", type=Path, help="CSV (header line with field names) or Parquet")
    p.add_argument("--kind", choices=_replay_kinds(), default="bars", help="what the file holds (default bars)")
    p.add_argument("--speed", type=_positive_float, default=0.0, help="event-time speed-up factor, 0 = as fast as possible (default)")
    p.add_argument("--symbol", help="symbol for files without a symbol column")
    p.add_argument("--timeframe", help="timeframe for bar files without a timeframe column")
    p.add_argument("--resume", action="store_true", help="continue after the rows a previous replay of FILE acknowledged")
    p.add_argument("--column", action="append", default=[], type=_column, metavar="NAME=FIELD",
                   help="read the file's column NAME as FIELD (repeatable), e.g. --column Date=ts")
    p.add_argument("--dry-run", action="store_true", help="validate every row and report, without a broker; send nothing")
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser("dlq", help="dead-lettered records: 'replay' re-sends chosen ones to their source topic")
    dlq = p.add_subparsers(required=True, metavar="ACTION")
    p = dlq.add_parser("replay", help="re-send DLQ records to their source topic, after a fix (original key, bytes and headers)")
    p.add_argument("--reason", action="append", default=[], help="only records of this DLQ reason (repeatable)")
    p.add_argument("--topic", help="only records from this source topic (its registry name, e.g. md.bars.v1)")
    p.add_argument("--from-offset", type=int, default=0, help="only records from this source offset on")
    p.add_argument("--to-offset", type=int, help="only records up to this source offset")
    p.add_argument("--all", action="store_true", help="every record (when no other filter is given)")
    p.add_argument("--dry-run", action="store_true", help="count what would be sent, send nothing")
    p.set_defaults(func=cmd_dlq_replay)

    p = sub.add_parser("worker", help="run the stream processors (faust worker)")
    p.add_argument("--metrics-port", type=int, help="serve /metrics here (default: TICKWIRE_METRICS_PORT)")
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("sink", help="write the enriched topics into their tables")
    p.add_argument("--metrics-port", type=int, help="serve /metrics here (default: TICKWIRE_METRICS_PORT)")
    p.add_argument(
        "--tables", type=_tables, default=_tables(""), metavar="T1,T2",
        help="only these tables (default: all of " + ", ".join(_sink_tables()) + ")",
    )
    p.set_defaults(func=cmd_sink)
    return parser


def _sink_tables() -> list[str]:
    """Each table a sink writes, once (two topics feed market_conditions)."""
    from tickwire.schemas.tables import SINKS

    return list(dict.fromkeys(table.name for _, table in SINKS))


def _tables(text: str) -> list[str]:
    known = _sink_tables()
    chosen = [name.strip() for name in text.split(",") if name.strip()] or known
    unknown = sorted(set(chosen) - set(known))
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown table {', '.join(unknown)}; known: {', '.join(known)}")
    return chosen


def _replay_kinds() -> list[str]:
    from tickwire.streams.replay import KINDS

    return list(KINDS)


def _timeframe(text: str) -> str:
    if not re.fullmatch(r"[1-9][0-9]{0,3}[mhd]", text):
        raise argparse.ArgumentTypeError(f"not a timeframe like 1m, 15m, 1h or 1d: {text!r}")
    return text


def _column(text: str) -> tuple[str, str]:
    name, sep, field = text.partition("=")
    if not sep or not name.strip() or not field.strip():
        raise argparse.ArgumentTypeError(f"not NAME=FIELD: {text!r}")
    return name.strip(), field.strip()


def _positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be zero or positive, got {text}")
    return value


def _utc_time(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from None
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def _serve_metrics(settings: Settings, port: int | None) -> Metrics:
    metrics = Metrics()
    try:
        serve(metrics, host=settings.metrics_host, port=port or settings.metrics_port)
    except OSError as exc:
        raise CommandError(f"cannot serve metrics on {settings.metrics_host}:{port or settings.metrics_port}: {exc.strerror}") from None
    return metrics


# --- database and topics -------------------------------------------------------------


async def _connect(settings: Settings):
    import asyncpg

    try:
        return await asyncpg.connect(**settings.pg_options(), timeout=15)
    except (OSError, asyncpg.PostgresError, asyncio.TimeoutError) as exc:
        raise Unreachable(f"cannot connect to PostgreSQL at {settings.safe_dsn()}: {type(exc).__name__}: {exc}") from None


async def _migrate(settings: Settings) -> None:
    from tickwire.sinks.migrate import flavor_of, migrate

    conn = await _connect(settings)
    try:
        applied = await migrate(conn)
        flavor = await flavor_of(conn)
    finally:
        await conn.close()
    names = ", ".join(f"{m.version:04d}_{m.name}" for m in applied) or "nothing to apply"
    print(f"migrated {settings.safe_dsn()} ({flavor}): {names}")


def cmd_maintain(settings: Settings, args: argparse.Namespace) -> int:
    """Once: exit 1 when a TimescaleDB background job's last run failed. With ``--every``: a
    service that maintains, then sleeps, until stopped; a failed round is logged, counted
    (``tickwire_maintenance_runs_total{result="failed"}``) and tried again next round."""
    if not args.every:
        return asyncio.run(_maintain(settings, args))
    metrics = _serve_metrics(settings, args.metrics_port)
    metrics.set_ready(True)

    async def rounds() -> None:
        while True:
            try:
                failed = await _maintain(settings, args)
            except Exception:  # the database away, a lock timeout: the next round tries again
                log.exception("maintenance failed; trying again in %.0f s", args.every)
                failed = 1
            metrics.maintenance_runs.labels("failed" if failed else "ok").inc()
            await asyncio.sleep(args.every)

    asyncio.run(rounds())
    return 0


async def _maintain(settings: Settings, args: argparse.Namespace) -> int:
    import json

    from tickwire.sinks.maintenance import maintain

    conn = await _connect(settings)
    try:
        report = await maintain(conn, months_ahead=args.months_ahead, retention=not args.no_retention)
    finally:
        await conn.close()
    print(json.dumps(report, indent=2, default=str), flush=True)
    return 1 if report.get("failed_jobs") else 0


async def _grant(settings: Settings, role: str) -> None:
    from tickwire.sinks.grants import grant_sink_role

    conn = await _connect(settings)
    try:
        await grant_sink_role(conn, role)
    finally:
        await conn.close()
    print(f"granted {role} the sink privileges on {settings.safe_dsn()}")


async def _export(settings: Settings, args: argparse.Namespace) -> None:
    from tickwire.sinks.export import export_csv, validate_export_args

    request = validate_export_args(args.kind, strategy=args.strategy, since=args.since, until=args.until, period=args.period)
    try:
        out = sys.stdout if args.output == "-" else open(args.output, "w", encoding="utf-8", newline="")
    except OSError as exc:
        raise CommandError(f"cannot write {args.output}: {exc.strerror}") from None
    conn = await _connect(settings)
    try:
        count = await export_csv(conn, out, request)
    finally:
        await conn.close()
        if out is not sys.stdout:
            out.close()
    print(f"exported {count} {args.kind} rows", file=sys.stderr)


# --- processes -------------------------------------------------------------------------


def cmd_topics(settings: Settings, args: argparse.Namespace) -> int:
    """Exit 1 when a topic's partition count differs from the registry's (keys would move)."""
    differences = asyncio.run(ensure_topics(settings))
    for line in differences:
        print(f"tickwire topics: {line}", file=sys.stderr)
    return 1 if partition_changes(differences) else 0


def cmd_schemas(settings: Settings, args: argparse.Namespace) -> None:
    from tickwire.schemas.contract import write

    try:
        written = write(Path(args.out))
    except OSError as exc:
        raise CommandError(f"cannot write the contract into {args.out}: {exc.strerror}") from None
    for path in written:
        print(path)


def cmd_simulate(settings: Settings, args: argparse.Namespace) -> None:
    metrics = _serve_metrics(settings, args.metrics_port)
    from tickwire.streams.simulator import publish

    asyncio.run(publish(
        settings, metrics, symbols=args.symbols, bars=args.bars, rate=args.rate, seed=args.seed, start=args.start,
        signals=args.signals, timeframe=args.timeframe,
    ))


def cmd_replay(settings: Settings, args: argparse.Namespace) -> int:
    """Exit 0 when every row was sent, 1 when some were rejected (reported on stderr)."""
    from tickwire.streams.replay import KINDS, check_file, publish_file

    defaults = {k: v for k, v in (("symbol", args.symbol), ("timeframe", args.timeframe)) if v}
    columns = dict(args.column)
    fields = KINDS[args.kind].message_type.__struct_fields__
    if unknown := [f"{name}={field}" for name, field in columns.items() if field not in fields]:
        raise UsageError(f"--column {', '.join(unknown)}: {args.kind} have no such field; theirs: {', '.join(fields)}")
    if args.dry_run:
        rejected = check_file(settings, args.file, args.kind, defaults=defaults, columns=columns)
    else:
        rejected = asyncio.run(publish_file(
            settings, args.file, args.kind, speed=args.speed, defaults=defaults, columns=columns, resume=args.resume
        ))
    return 1 if rejected else 0


def cmd_dlq_replay(settings: Settings, args: argparse.Namespace) -> int:
    from tickwire.schemas.errors import REASONS
    from tickwire.schemas.topics import ALL
    from tickwire.streams.dlq import ReplayFilter, replay_dlq

    unknown = sorted(set(args.reason) - REASONS)
    if unknown:
        raise UsageError(f"unknown DLQ reason {', '.join(unknown)}; known: {', '.join(sorted(REASONS))}")
    if args.topic and args.topic not in {t.name for t in ALL}:
        raise UsageError(f"unknown topic {args.topic!r}; known: {', '.join(t.name for t in ALL)}")
    if not (args.reason or args.topic or args.from_offset or args.to_offset is not None or args.all):
        raise UsageError("name what to replay: --reason, --topic, an offset range, or --all")
    chosen = ReplayFilter(
        frozenset(args.reason), settings.topic(args.topic) if args.topic else "", args.from_offset, args.to_offset
    )
    report = asyncio.run(replay_dlq(settings, chosen, dry_run=args.dry_run))
    topics = ", ".join(f"{count} to {topic}" for topic, count in sorted(report.by_topic.items())) or "none"
    verb = "would send" if args.dry_run else "sent"
    print(f"{report.matched} DLQ records matched; {verb} {topics}; {report.truncated} truncated by the DLQ, not replayable")
    return 0


def cmd_worker(settings: Settings, args: argparse.Namespace) -> None:
    import faust

    from tickwire.streams.worker.app import create_app

    metrics = _serve_metrics(settings, args.metrics_port)
    for line in asyncio.run(ensure_topics(settings)):  # inputs, outputs and changelogs, before the first rebalance
        log.warning("topic differs from the registry: %s", line)
    try:
        app = create_app(settings, metrics)
    except ValueError as exc:  # a configuration file the settings name (sectors) is unusable
        raise CommandError(str(exc)) from None
    worker = faust.Worker(app, loglevel=settings.log_level, quiet=True, logging_config=logging_config(settings.log_level))
    # faust's terminal spinner puts the root logger at DEBUG: every send then builds a log record.
    worker.spinner = None
    worker.execute_from_commandline()


def cmd_sink(settings: Settings, args: argparse.Namespace) -> None:
    from tickwire.sinks.process import run_sinks

    metrics = _serve_metrics(settings, args.metrics_port)
    try:
        asyncio.run(run_sinks(settings, metrics, args.tables))
    except asyncio.CancelledError:
        pass


# --- the embedded default ----------------------------------------------------------------

def _var() -> Path:
    """deploy/local's directory for the local stack's data, logs and password
    (TICKWIRE_VAR_DIR: a second stack beside the first sets it, and TICKWIRE_LOCAL_*_PORTs)."""
    return Path(os.environ.get("TICKWIRE_VAR_DIR") or ROOT / "var")


def _password_file() -> Path:
    return _var() / "pg" / "password"


def _pidfile() -> Path:
    """Where ``tickwire run`` leaves its pid for ``tickwire stop``."""
    return _var() / "run" / "tickwire.pid"


def _services(action: str) -> None:
    for script in ("kafka.sh", "postgres.sh"):
        if subprocess.run(["bash", str(LOCAL / script), action]).returncode != 0:
            raise CommandError(f"deploy/local/{script} {action} failed (logs in {_var() / 'log'})")


def _before_start() -> dict[str, str]:
    """The environment ``tickwire run`` reads its settings from before it starts the local
    stack: a password file that start-up creates is not there yet (it is read after)."""
    env = dict(os.environ)
    if env.get("TICKWIRE_PG_PASSWORD_FILE") == str(_password_file()) and not _password_file().exists():
        del env["TICKWIRE_PG_PASSWORD_FILE"]
    return env


def _local_dsn(role: str) -> str:
    return f"postgresql://{role}@127.0.0.1:{os.environ.get('TICKWIRE_LOCAL_PG_PORT', '15432')}/tickwire"


def _local_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("TICKWIRE_KAFKA_BOOTSTRAP", f"127.0.0.1:{os.environ.get('TICKWIRE_LOCAL_KAFKA_PORT', '19092')}")
    env.setdefault("TICKWIRE_PG_DSN", _local_dsn("tickwire"))
    env.setdefault("TICKWIRE_PG_PASSWORD_FILE", str(_password_file()))
    # The simulator's named symbols and their sectors, for sector_correlation.
    env.setdefault("TICKWIRE_CORRELATION_SECTORS_FILE", str(LOCAL / "sectors.csv"))
    return env


def cmd_run(settings: Settings, args: argparse.Namespace) -> int:
    commands = (["worker"], ["sink"], ["simulate", "--symbols", str(args.symbols), "--rate", str(args.rate)],
                ["maintain", "--every", "86400"])
    port = settings.metrics_port
    _check_ports_free(settings.metrics_host, {port + offset: command[0] for offset, command in enumerate(commands)})
    if not args.no_services:
        if not LOCAL.is_dir():
            raise CommandError("deploy/local/ is not beside this installation; use --no-services with TICKWIRE_* settings")
        _services("start")
        env = _local_env()
        settings = Settings.from_env(env)
    else:
        env = dict(os.environ)
    pidfile, logs = _pidfile(), _var() / "log"
    pidfile.parent.mkdir(parents=True, exist_ok=True)
    logs.mkdir(parents=True, exist_ok=True)
    pidfile.write_text(str(os.getpid()))
    exe = [sys.executable, "-m", "tickwire.streams.cli"]
    children: list[subprocess.Popen] = []
    stopping = False

    def request_stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    # On the local database the sink writes as the least-privilege role deploy/local makes,
    # as it would in production (deploy/k8s, compose), not as the tables' owner.
    sink_env = env
    steps = [["migrate"], ["topics"]]
    if not args.no_services and env["TICKWIRE_PG_DSN"] == _local_dsn("tickwire"):
        steps.append(["grant-sink", "tickwire_sink"])
        sink_env = env | {"TICKWIRE_PG_DSN": _local_dsn("tickwire_sink"),
                          "TICKWIRE_PG_PASSWORD_FILE": str(_password_file().with_name("sink_password"))}
    try:
        for step in steps:
            if subprocess.run(exe + step, env=env).returncode != 0:
                raise CommandError(f"tickwire {step[0]} failed")
        for offset, command in enumerate(commands):
            log_file = open(logs / f"{command[0]}.log", "ab")
            children.append(subprocess.Popen(
                exe + command + ["--metrics-port", str(port + offset)], env=sink_env if command == ["sink"] else env,
                stdout=log_file, stderr=subprocess.STDOUT,
            ))
        host = settings.metrics_host
        print(
            f"""
Tickwire is running: simulator (bars, predictions, orders, fills, sizing and exit decisions) -> worker (indicators, regimes, correlations, validation, trades, positions, decisions) -> sink -> {len(_sink_tables())} tables
  metrics:  http://{host}:{port}/metrics (worker)  http://{host}:{port + 1}/metrics (sink)  http://{host}:{port + 2}/metrics (simulator)
  upkeep:   tickwire maintain, now and every 24 h (partitions ahead, retention, views: {logs / 'maintain.log'})
  database: {settings.safe_dsn()}  (password in {env.get('TICKWIRE_PG_PASSWORD_FILE', 'TICKWIRE_PG_PASSWORD')})
  see rows: PGPASSWORD=$(cat {env.get('TICKWIRE_PG_PASSWORD_FILE', _password_file())}) psql "{settings.safe_dsn()}" -c "SELECT symbol, timestamp, close, ema_20 FROM market_conditions ORDER BY timestamp DESC LIMIT 10"
  logs:     {logs}/
  stop:     Ctrl-C here, or 'tickwire stop' from another shell
""",
            flush=True,
        )
        while not stopping:
            for child in children:
                if child.poll() is not None:
                    raise CommandError(f"{' '.join(child.args[3:4])} exited with {child.returncode}; see {logs}/")
            time.sleep(0.5)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        for child in children:
            if child.poll() is None:
                child.terminate()
        for child in children:
            try:
                child.wait(timeout=30)
            except subprocess.TimeoutExpired:
                child.kill()
        if not args.no_services:
            _services("stop")
        pidfile.unlink(missing_ok=True)
        print("tickwire: stopped", flush=True)
    return 0


def _check_ports_free(host: str, owners: dict[int, str]) -> None:
    """Before any child starts: a metrics port already taken would end its process at once,
    and ``run`` with it, with the reason only in that process's log."""
    for port, owner in owners.items():
        with socket.socket() as probe:
            try:
                probe.bind((host, port))
            except OSError as exc:
                raise CommandError(
                    f"metrics port {host}:{port} for the {owner} is not free ({exc.strerror}); set TICKWIRE_METRICS_PORT "
                    f"to the first of {len(owners)} free ports"
                ) from None


def cmd_stop(settings: Settings, args: argparse.Namespace) -> int:
    pidfile = _pidfile()
    if pidfile.exists():
        pid = int(pidfile.read_text())
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pidfile.unlink(missing_ok=True)
        else:
            for _ in range(120):
                if not pidfile.exists():
                    print("tickwire: stopped")
                    return 0
                time.sleep(0.5)
            raise CommandError(f"tickwire run (pid {pid}) did not stop within 60 s")
    _services("stop")
    print("tickwire: nothing was running; local services stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
