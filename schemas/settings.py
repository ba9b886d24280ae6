"""One typed, frozen settings object read from ``TICKWIRE_*`` environment variables.

Every environment variable Tickwire reads is a field here; ``ENV_VARS`` lists them so
deploy files can be checked against it. Any other ``TICKWIRE_*`` variable is refused
(a misspelt one would leave its setting at the default), except the ``NOT_SETTINGS`` the
scripts around Tickwire use. Secrets come from the environment or from a file
(``TICKWIRE_KAFKA_SASL_PASSWORD_FILE``, ``TICKWIRE_PG_PASSWORD_FILE``) and never appear
in ``repr``.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import ssl
import urllib.parse
from pathlib import Path
from typing import Mapping

from tickwire.schemas.errors import TickwireError
from tickwire.schemas.market import MAX_BARS_PER_PERIOD, REGIMES, timeframe_seconds

PREFIX = "TICKWIRE_"
# The pairwise correlations' ceiling: a step costs about 0.9 s at 1,000 symbols on one core,
# and the state about 0.8 KB per symbol (written in chunks above 192 KiB).
MAX_CORRELATED_SYMBOLS = 2000
_TIMEFRAME = re.compile(r"^[1-9][0-9]{0,3}[mhd]$")
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
# The mechanisms a user name and password are enough for (aiokafka's GSSAPI and OAUTHBEARER need more).
_SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


_PASSWORD_PAIR = re.compile(r"password\s*=\s*(?:'(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)


class SettingsError(TickwireError, ValueError):
    """A TICKWIRE_* variable has a value that cannot be used."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Settings:
    # Kafka
    kafka_bootstrap: str = "127.0.0.1:19092"
    kafka_security_protocol: str = "PLAINTEXT"  # PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL
    kafka_sasl_mechanism: str = "SCRAM-SHA-512"
    kafka_sasl_username: str = ""
    kafka_sasl_password: str = dataclasses.field(default="", repr=False)
    kafka_ssl_cafile: str = ""
    topic_prefix: str = ""
    processor_group: str = "tickwire-processors"
    sink_group: str = "tickwire-sinks"
    # Copies of every topic and changelog Tickwire creates, and how many must have a write
    # (acks=all) for it to count: 1 and 1 fit a single local broker, 3 and 2 a production cluster.
    topic_replication_factor: int = 1
    topic_min_insync_replicas: int = 1
    # PostgreSQL / TimescaleDB
    pg_dsn: str = dataclasses.field(default="postgresql://tickwire@127.0.0.1:15432/tickwire", repr=False)
    pg_password: str = dataclasses.field(default="", repr=False)
    pg_sslmode: str = "prefer"
    pg_pool_size: int = 4
    # Sinks
    max_batch_rows: int = 5000
    flush_interval_s: float = 0.5
    # Stream processing
    worker_batch_events: int = 2000  # an agent takes up to this many messages at a time ...
    worker_batch_within_s: float = 0.05  # ... or what arrived within this long
    # The stages this worker runs, by name (empty: every stage). A worker running some of
    # them needs a processor group of its own: e.g. the correlations in one group, the rest in another.
    worker_stages: str = ""
    base_timeframe: str = "1m"  # bars of this timeframe are resampled into resample_timeframes
    resample_timeframes: str = "5m,15m,1h,1d"  # comma-separated; empty = no resampling
    vwap_anchor_s: int = 86_400  # VWAP restarts every anchor period (UTC-aligned)
    regime_trend_adx: float = 25.0
    regime_volatile_percentile: float = 0.9
    regime_confirm_bars: int = 3
    prediction_neutral_band: float = 0.0005  # |return| within this is NEUTRAL
    prediction_expire_after_s: float = 86_400.0  # pending this long past its horizon: expired
    prediction_history_bars: int = 60  # closes kept per symbol to validate late predictions (its changelog cost is per bar)
    trade_breakeven_band: float = 0.0001  # |net P&L| within this share of entry notional: BREAKEVEN
    performance_capital: float = 100_000.0  # account size that turns P&L into returns
    model_performance_days: int = 2  # days a model's outcomes are kept to recompute its day; older ones are ignored
    strategy_performance_days: int = 8  # a closed trade still counts this many days after its strategy's latest exit (at least 8: trades are re-sent for 7)
    correlation_timeframes: str = "1m,1h,1d"  # comma-separated; empty = no correlation stage
    correlation_windows: str = "20,60"  # bars
    correlation_min_common: int = 10  # fewer common returns than this: null
    correlation_benchmark: str = "SPY"
    correlation_threshold: float = 0.7  # |corr| at or above: grouped, and crossings are events
    # regime=threshold,... : the threshold instead while the benchmark is in that regime; empty = correlation_threshold always
    correlation_thresholds: str = ""
    correlation_snapshot_every: int = 10  # publish a snapshot every N bar closes
    correlation_sectors_file: str = ""  # CSV (symbol,sector) or JSON {symbol: sector}
    correlation_quiet_bars: int = 1000  # a symbol silent this long no longer holds the others' bars back
    correlation_universe: str = ""  # comma-separated symbols the pairwise correlations cover; empty = the first ones seen
    correlation_max_symbols: int = 500  # at most this many symbols per timeframe (the benchmark besides)
    # Execution: which portfolios trade, their starting cash and risk limits (JSON, see
    # streams.portfolios); empty = any portfolio, performance_capital each, no limits
    portfolios_file: str = ""
    orders_required: bool = False  # every fill must name an order seen on exec.orders.v1
    # Validation
    max_message_bytes: int = 1_000_000
    max_future_skew_s: float = 86_400.0
    # Observability
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9100
    log_level: str = "INFO"

    def topic(self, name: str) -> str:
        """The physical topic name: the registry name behind the configured prefix."""
        return self.topic_prefix + name

    def kafka_ssl_context(self) -> "ssl.SSLContext | None":
        if self.kafka_security_protocol not in ("SSL", "SASL_SSL"):
            return None
        return ssl.create_default_context(cafile=self.kafka_ssl_cafile or None)

    def kafka_options(self) -> dict[str, object]:
        """Keyword arguments for every aiokafka client: bootstrap servers and security."""
        options: dict[str, object] = {
            "bootstrap_servers": self.kafka_bootstrap.split(","),
            "security_protocol": self.kafka_security_protocol,
            "ssl_context": self.kafka_ssl_context(),
        }
        if self.kafka_security_protocol.startswith("SASL"):
            options.update(
                sasl_mechanism=self.kafka_sasl_mechanism,
                sasl_plain_username=self.kafka_sasl_username,
                sasl_plain_password=self.kafka_sasl_password,
            )
        return options

    def pg_options(self) -> dict[str, object]:
        """Keyword arguments for asyncpg's ``connect``/``create_pool``."""
        options: dict[str, object] = {"dsn": self.pg_dsn, "ssl": self.pg_sslmode}
        if self.pg_password:
            options["password"] = self.pg_password
        return options

    def safe_dsn(self) -> str:
        """The DSN without its password, for messages and logs; never raises.

        A URL keeps scheme, user, host and database (its userinfo ends at the last ``@``,
        so a password holding ``/``, ``#`` or ``?`` is cut whole, and the query, which may
        carry ``password=``, is dropped); a ``key=value`` DSN has its password masked.
        """
        dsn = self.pg_dsn
        if "://" not in dsn:
            return _PASSWORD_PAIR.sub("password=***", dsn)
        scheme, rest = dsn.split("://", 1)
        if "@" in rest:
            userinfo, rest = rest.rsplit("@", 1)
            rest = f"{userinfo.split(':', 1)[0]}@{rest}"
        return f"{scheme}://{rest.split('?', 1)[0]}"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> "Settings":
        """Read every field from ``TICKWIRE_<FIELD>``; ``*_FILE`` variants hold secrets."""
        env = os.environ if environ is None else environ
        _refuse_unknown(env)
        values: dict[str, object] = {}
        for field in dataclasses.fields(cls):
            var = PREFIX + field.name.upper()
            raw = env.get(var)
            file_var = var + "_FILE"
            if raw is None and field.name in SECRET_FIELDS and env.get(file_var):
                try:
                    raw = Path(env[file_var]).read_text().strip()
                except OSError as exc:
                    raise SettingsError(f"{file_var}: cannot read {env[file_var]!r}: {exc.strerror}") from None
            if raw is None:
                continue
            values[field.name] = _parse(var, field.type, raw)
        values.update(overrides)
        settings = cls(**values)
        settings._check()
        return settings

    def _check(self) -> None:
        if self.kafka_security_protocol not in {"PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"}:
            raise SettingsError(f"TICKWIRE_KAFKA_SECURITY_PROTOCOL: unknown protocol {self.kafka_security_protocol!r}")
        if self.kafka_sasl_mechanism not in _SASL_MECHANISMS:
            raise SettingsError(
                f"TICKWIRE_KAFKA_SASL_MECHANISM: {self.kafka_sasl_mechanism!r} is not one of {', '.join(_SASL_MECHANISMS)}"
            )
        if self.pg_sslmode not in {"disable", "allow", "prefer", "require", "verify-ca", "verify-full"}:
            raise SettingsError(f"TICKWIRE_PG_SSLMODE: unknown mode {self.pg_sslmode!r}")
        problem = _dsn_problem(self.pg_dsn)
        if problem:
            raise SettingsError(f"TICKWIRE_PG_DSN {self.safe_dsn()!r}: {problem}")
        if self.log_level.upper() not in _LOG_LEVELS:
            raise SettingsError(f"TICKWIRE_LOG_LEVEL: {self.log_level!r} is not one of {', '.join(_LOG_LEVELS)}")
        for name in ("max_batch_rows", "pg_pool_size", "max_message_bytes", "worker_batch_events"):
            if getattr(self, name) <= 0:
                raise SettingsError(f"{PREFIX}{name.upper()}: must be positive")
        if self.flush_interval_s <= 0:
            raise SettingsError("TICKWIRE_FLUSH_INTERVAL_S: must be positive")
        if self.model_performance_days < 1 or self.strategy_performance_days < 8:
            raise SettingsError("TICKWIRE_MODEL_PERFORMANCE_DAYS must be at least 1, TICKWIRE_STRATEGY_PERFORMANCE_DAYS at least 8")
        if not 1 <= self.topic_min_insync_replicas <= self.topic_replication_factor:
            raise SettingsError(
                "TICKWIRE_TOPIC_MIN_INSYNC_REPLICAS must be from 1 to TICKWIRE_TOPIC_REPLICATION_FACTOR"
                f" ({self.topic_min_insync_replicas} and {self.topic_replication_factor})"
            )
        if self.worker_batch_within_s <= 0:
            raise SettingsError("TICKWIRE_WORKER_BATCH_WITHIN_S: must be positive")
        if not _TIMEFRAME.match(self.base_timeframe):
            raise SettingsError(f"TICKWIRE_BASE_TIMEFRAME: {self.base_timeframe!r} is not a timeframe like 1m, 1h or 1d")
        base_s = timeframe_seconds(self.base_timeframe)
        for tf in self.resample_to:
            if not _TIMEFRAME.match(tf) or timeframe_seconds(tf) <= base_s or timeframe_seconds(tf) % base_s:
                raise SettingsError(f"TICKWIRE_RESAMPLE_TIMEFRAMES: {tf!r} is not a timeframe that is a multiple of {self.base_timeframe}")
            if timeframe_seconds(tf) // base_s > MAX_BARS_PER_PERIOD:
                raise SettingsError(
                    f"TICKWIRE_RESAMPLE_TIMEFRAMES: {tf!r} holds more than {MAX_BARS_PER_PERIOD} {self.base_timeframe} bars,"
                    " whose summed volume could pass a BIGINT"
                )
        if self.vwap_anchor_s <= 0:
            raise SettingsError("TICKWIRE_VWAP_ANCHOR_S: must be positive")
        for tf in self.correlated:
            if tf != self.base_timeframe and tf not in self.resample_to:
                raise SettingsError(f"TICKWIRE_CORRELATION_TIMEFRAMES: {tf!r} is neither the base timeframe nor resampled")
        try:
            windows = self.correlation_window_bars
        except ValueError:
            raise SettingsError(f"TICKWIRE_CORRELATION_WINDOWS: {self.correlation_windows!r} is not a list of bar counts") from None
        if not windows or len(set(windows)) != len(windows) or not 2 <= self.correlation_min_common <= min(windows):
            raise SettingsError("TICKWIRE_CORRELATION_WINDOWS / _MIN_COMMON: need distinct windows and 2 <= min_common <= the smallest")
        if not 0 < self.correlation_threshold <= 1 or self.correlation_snapshot_every < 1:
            raise SettingsError("TICKWIRE_CORRELATION_THRESHOLD must be in (0, 1] and _SNAPSHOT_EVERY at least 1")
        self.correlation_regime_thresholds  # raises SettingsError naming what is wrong
        if not 2 <= self.correlation_max_symbols <= MAX_CORRELATED_SYMBOLS:
            raise SettingsError(
                f"TICKWIRE_CORRELATION_MAX_SYMBOLS: must be 2..{MAX_CORRELATED_SYMBOLS} (a step costs the square of it)"
            )
        if len(self.correlation_symbols) > self.correlation_max_symbols:
            raise SettingsError(
                f"TICKWIRE_CORRELATION_UNIVERSE: {len(self.correlation_symbols)} symbols, more than"
                f" TICKWIRE_CORRELATION_MAX_SYMBOLS ({self.correlation_max_symbols})"
            )

    @property
    def correlation_window_bars(self) -> tuple[int, ...]:
        return tuple(int(w) for w in self.correlation_windows.split(",") if w.strip())

    @property
    def correlation_regime_thresholds(self) -> tuple[tuple[str, float], ...]:
        """``TICKWIRE_CORRELATION_THRESHOLDS`` as (regime, threshold) pairs, in the order given."""
        var, pairs = "TICKWIRE_CORRELATION_THRESHOLDS", []
        for item in (part.strip() for part in self.correlation_thresholds.split(",")):
            if not item:
                continue
            regime, equals, value = (x.strip() for x in item.partition("="))
            if not equals:
                raise SettingsError(f"{var}: {item!r} is not regime=threshold")
            if regime not in REGIMES:
                raise SettingsError(f"{var}: {regime!r} is not a regime ({', '.join(REGIMES)})")
            if regime in dict(pairs):
                raise SettingsError(f"{var}: {regime!r} is given twice")
            try:
                threshold = float(value)
            except ValueError:
                raise SettingsError(f"{var}: {regime}'s threshold {value!r} is not a number") from None
            if not 0 < threshold <= 1:
                raise SettingsError(f"{var}: {regime}'s threshold {threshold:g} is not in (0, 1]")
            pairs.append((regime, threshold))
        return tuple(pairs)

    @property
    def correlation_symbols(self) -> frozenset[str]:
        """The configured correlation universe (empty: the first symbols seen, up to the maximum)."""
        return frozenset(symbol.strip() for symbol in self.correlation_universe.split(",") if symbol.strip())

    @property
    def stages(self) -> tuple[str, ...]:
        """The names of the stages this worker runs (empty: every stage)."""
        return tuple(name.strip() for name in self.worker_stages.split(",") if name.strip())

    @property
    def correlated(self) -> tuple[str, ...]:
        """The timeframes the correlation stage follows."""
        return tuple(tf.strip() for tf in self.correlation_timeframes.split(",") if tf.strip())

    @property
    def resample_to(self) -> tuple[str, ...]:
        """The higher timeframes base bars are resampled into, shortest first."""
        return tuple(tf.strip() for tf in self.resample_timeframes.split(",") if tf.strip())


SECRET_FIELDS = frozenset({"kafka_sasl_password", "pg_password", "pg_dsn"})
ENV_VARS = frozenset(PREFIX + f.name.upper() for f in dataclasses.fields(Settings)) | frozenset(
    PREFIX + name.upper() + "_FILE" for name in SECRET_FIELDS
)
# TICKWIRE_* variables that are not settings: deploy/local's scripts and the tests read them,
# and the processes they start inherit them, so the check for misspelt settings lets them by.
NOT_SETTINGS = frozenset(
    {
        # deploy/local/common.sh: the local stack's directory, ports and flavour
        "TICKWIRE_VAR_DIR", "TICKWIRE_LOCAL_KAFKA_PORT", "TICKWIRE_LOCAL_KAFKA_CONTROLLER_PORT",
        "TICKWIRE_LOCAL_KAFKA_SASL_PORT", "TICKWIRE_LOCAL_PG_PORT", "TICKWIRE_LOCAL_TIMESCALEDB",
        # deploy/local/test.sh: the test stack's, beside a running demo
        "TICKWIRE_TEST_VAR_DIR", "TICKWIRE_TEST_KAFKA_PORT", "TICKWIRE_TEST_KAFKA_CONTROLLER_PORT",
        "TICKWIRE_TEST_KAFKA_SASL_PORT", "TICKWIRE_TEST_PG_PORT",
        # tests/: fail rather than skip without services, keep databases, fault tests' size
        "TICKWIRE_REQUIRE_SERVICES", "TICKWIRE_TEST_KEEP_DB", "TICKWIRE_FAULT_SCALE",
    }
)


def _refuse_unknown(env: Mapping[str, str]) -> None:
    """A misspelt variable would be ignored and its setting left at the default: name it."""
    known = ENV_VARS | NOT_SETTINGS
    suffixes = [name.removeprefix(PREFIX) for name in known]  # the prefix they share would make any name look close
    problems = []
    for name in sorted(name for name in env if name.startswith(PREFIX) and name not in known):
        close = difflib.get_close_matches(name.removeprefix(PREFIX), suffixes, n=1)
        problems.append(f"{name}: not a Tickwire setting" + (f" (did you mean {PREFIX}{close[0]}?)" if close else ""))
    if problems:
        raise SettingsError("; ".join(problems))


def _dsn_problem(dsn: str) -> str | None:
    """Why asyncpg would refuse ``dsn`` (None: it would not), in words that quote none of it:
    it may hold a password."""
    try:
        url = urllib.parse.urlsplit(dsn)
        urllib.parse.parse_qs(url.query, strict_parsing=True)
    except ValueError:
        return "not a URL with name=value parameters"
    if url.scheme not in ("postgresql", "postgres"):
        return "not a postgresql:// URL"
    for host in url.netloc.rpartition("@")[2].split(","):
        port = host.rpartition("]")[2].partition(":")[2]
        if port and not port.isdigit():
            return "a port is not a number (in a password, / # ? and @ must be percent-encoded)"
    return None


def _parse(var: str, kind: object, raw: str) -> object:
    try:
        if kind in (int, "int"):
            return int(raw)
        if kind in (float, "float"):
            return float(raw)
    except ValueError:
        raise SettingsError(f"{var}: expected a number, got {raw!r}") from None
    if kind in (bool, "bool"):
        if raw.lower() not in ("true", "false", "1", "0"):
            raise SettingsError(f"{var}: expected true or false, got {raw!r}")
        return raw.lower() in ("true", "1")
    return raw
