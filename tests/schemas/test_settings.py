import re
from pathlib import Path

import pytest

from tickwire.schemas.settings import ENV_VARS, NOT_SETTINGS, Settings, SettingsError

ROOT = Path(__file__).resolve().parents[2]


def test_reads_typed_values_from_the_environment():
    s = Settings.from_env({"TICKWIRE_MAX_BATCH_ROWS": "250", "TICKWIRE_FLUSH_INTERVAL_S": "0.25", "TICKWIRE_TOPIC_PREFIX": "dev."})
    assert (s.max_batch_rows, s.flush_interval_s, s.topic("md.bars.v1")) == (250, 0.25, "dev.md.bars.v1")


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"TICKWIRE_MAX_BATCH_ROWS": "many"}, "TICKWIRE_MAX_BATCH_ROWS"),
        ({"TICKWIRE_MAX_BATCH_ROWS": "0"}, "TICKWIRE_MAX_BATCH_ROWS"),
        ({"TICKWIRE_PG_SSLMODE": "sometimes"}, "TICKWIRE_PG_SSLMODE"),
        ({"TICKWIRE_KAFKA_SECURITY_PROTOCOL": "TLS"}, "TICKWIRE_KAFKA_SECURITY_PROTOCOL"),
        ({"TICKWIRE_RESAMPLE_TIMEFRAMES": "1h,7d"}, "BIGINT"),  # 10,080 1m bars could sum past it
        ({"TICKWIRE_MODEL_PERFORMANCE_DAYS": "0"}, "TICKWIRE_MODEL_PERFORMANCE_DAYS"),
        ({"TICKWIRE_TOPIC_REPLICATION_FACTOR": "3", "TICKWIRE_TOPIC_MIN_INSYNC_REPLICAS": "4"}, "TICKWIRE_TOPIC_MIN_INSYNC_REPLICAS"),
        ({"TICKWIRE_CORRELATION_MAX_SYMBOLS": "10000"}, "TICKWIRE_CORRELATION_MAX_SYMBOLS"),
        ({"TICKWIRE_CORRELATION_MAX_SYMBOLS": "2", "TICKWIRE_CORRELATION_UNIVERSE": "A,B,C"}, "TICKWIRE_CORRELATION_UNIVERSE"),
        ({"TICKWIRE_CORRELATION_THRESHOLDS": "volatile:0.6"}, "TICKWIRE_CORRELATION_THRESHOLDS: 'volatile:0.6' is not regime=threshold"),
        ({"TICKWIRE_CORRELATION_THRESHOLDS": "bull=0.6"}, r"TICKWIRE_CORRELATION_THRESHOLDS: 'bull' is not a regime \(trending_up, "),
        ({"TICKWIRE_CORRELATION_THRESHOLDS": "volatile=0.6,volatile=0.5"}, "TICKWIRE_CORRELATION_THRESHOLDS: 'volatile' is given twice"),
        ({"TICKWIRE_CORRELATION_THRESHOLDS": "volatile=low"}, "TICKWIRE_CORRELATION_THRESHOLDS: volatile's threshold 'low' is not a number"),
        ({"TICKWIRE_CORRELATION_THRESHOLDS": "ranging=1.2"}, r"TICKWIRE_CORRELATION_THRESHOLDS: ranging's threshold 1.2 is not in \(0, 1\]"),
        ({"TICKWIRE_CORRELATION_THRESHOLDS": "ranging=nan"}, "ranging's threshold nan is not in"),
        ({"TICKWIRE_LOG_LEVEL": "LOUD"}, "TICKWIRE_LOG_LEVEL: 'LOUD' is not one of DEBUG, INFO"),
        ({"TICKWIRE_KAFKA_SASL_MECHANISM": "SCRAM"}, "TICKWIRE_KAFKA_SASL_MECHANISM: 'SCRAM' is not one of PLAIN"),
        ({"TICKWIRE_PG_DSN": "mysql://tickwire@db/tickwire"}, "TICKWIRE_PG_DSN 'mysql://tickwire@db/tickwire': not a postgresql://"),
        ({"TICKWIRE_PG_DSN": "host=db dbname=tickwire"}, "not a postgresql://"),  # libpq's form: asyncpg reads URLs only
        ({"TICKWIRE_PG_DSN": "postgresql://tickwire@db:port/tickwire"}, "a port is not a number"),
        ({"TICKWIRE_PG_DSN": "postgresql://tickwire@db/tickwire?sslmode"}, "name=value"),
    ],
)
def test_bad_values_name_the_variable(env, names):
    with pytest.raises(SettingsError, match=names):
        Settings.from_env(env)


def test_correlation_thresholds_by_regime_are_read_in_order_and_empty_by_default():
    s = Settings.from_env({"TICKWIRE_CORRELATION_THRESHOLDS": " volatile = 0.6, trending_up=0.75 ,"})
    assert s.correlation_regime_thresholds == (("volatile", 0.6), ("trending_up", 0.75))
    assert Settings.from_env({}).correlation_regime_thresholds == ()


def test_secrets_come_from_files_and_never_show_in_repr(tmp_path):
    secret = tmp_path / "pw"
    secret.write_text("s3cret-value\n")
    s = Settings.from_env(
        {"TICKWIRE_PG_PASSWORD_FILE": str(secret), "TICKWIRE_PG_DSN": "postgresql://u:inline-pw@db:5432/tw"}
    )
    assert s.pg_password == "s3cret-value"
    assert "s3cret" not in repr(s) and "inline-pw" not in repr(s)
    assert s.safe_dsn() == "postgresql://u@db:5432/tw"


def test_unreadable_secret_file_is_a_clear_error(tmp_path):
    with pytest.raises(SettingsError, match="TICKWIRE_PG_PASSWORD_FILE"):
        Settings.from_env({"TICKWIRE_PG_PASSWORD_FILE": str(tmp_path / "missing")})


def test_sasl_options_reach_the_kafka_clients():
    s = Settings.from_env(
        {"TICKWIRE_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "TICKWIRE_KAFKA_SASL_USERNAME": "u", "TICKWIRE_KAFKA_SASL_PASSWORD": "p"}
    )
    options = s.kafka_options()
    assert options["sasl_mechanism"] == "SCRAM-SHA-512" and options["sasl_plain_username"] == "u"


def test_env_var_list_covers_every_field():
    assert "TICKWIRE_KAFKA_BOOTSTRAP" in ENV_VARS and "TICKWIRE_PG_PASSWORD_FILE" in ENV_VARS


def test_a_misspelt_variable_is_named_with_the_setting_it_resembles():
    with pytest.raises(SettingsError) as err:
        Settings.from_env({"TICKWIRE_KAFKA_BOOTSRAP": "kafka:9092", "TICKWIRE_WIDGETS": "3", "PATH": "/bin"})
    assert str(err.value) == (
        "TICKWIRE_KAFKA_BOOTSRAP: not a Tickwire setting (did you mean TICKWIRE_KAFKA_BOOTSTRAP?);"
        " TICKWIRE_WIDGETS: not a Tickwire setting"
    )
    assert Settings.from_env(dict.fromkeys(NOT_SETTINGS, "1")).kafka_bootstrap == Settings().kafka_bootstrap


def test_every_tickwire_variable_the_repository_uses_is_a_setting_or_allowed():
    """The scripts and tests pass their own TICKWIRE_* variables to the processes they start."""
    files = [ROOT / "README.md", ROOT / "docker-compose.yml", *(ROOT / ".ci").iterdir()] + [
        path for folder in ("deploy", "schemas", "streams", "sinks", "tests") for path in (ROOT / folder).rglob("*")
        if path.suffix in (".py", ".sh", ".yaml", ".yml", ".md", "") and path.is_file() and path != Path(__file__)
    ]
    used = {name for path in files for name in re.findall(r"\bTICKWIRE_[A-Z0-9_]*[A-Z0-9]\b", path.read_text(errors="replace"))}
    assert "TICKWIRE_VAR_DIR" in used, "the scan found none of the scripts' variables: it would be vacuous"
    assert not used - ENV_VARS - NOT_SETTINGS


@pytest.mark.parametrize(
    "dsn, shown",
    [
        ("postgresql://tickwire:s3cret@db:5432/tickwire", "postgresql://tickwire@db:5432/tickwire"),
        ("postgresql://tickwire:a/b#c?d@db/tickwire", "postgresql://tickwire@db/tickwire"),
        ("postgresql://tickwire@db/tickwire?sslmode=require&password=s3cret", "postgresql://tickwire@db/tickwire"),
        ("host=db user=tickwire password=s3cret dbname=tickwire", "host=db user=tickwire password=*** dbname=tickwire"),
        ("host=db password = 'it\\'s s3cret' dbname=t", "host=db password=*** dbname=t"),  # libpq's quoting
    ],
)
def test_the_shown_dsn_never_holds_the_password_and_never_raises(dsn, shown):
    safe = Settings(pg_dsn=dsn).safe_dsn()
    assert safe == shown and "s3cret" not in safe and "a/b" not in safe
