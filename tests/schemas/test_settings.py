import pytest

from tickwire.schemas.settings import ENV_VARS, Settings, SettingsError


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
    ],
)
def test_bad_values_name_the_variable(env, names):
    with pytest.raises(SettingsError, match=names):
        Settings.from_env(env)


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
