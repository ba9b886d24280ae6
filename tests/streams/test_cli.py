"""The command line without services: its version, help, exit codes, and one clean line
when Kafka is out of reach."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys

import pytest

from tickwire.schemas.tables import SINKS
from tickwire.streams.cli import main


def test_version_is_the_installed_packages(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out == f"tickwire {importlib.metadata.version('tickwire')}\n"


def test_sink_help_lists_each_table_once(capsys):
    with pytest.raises(SystemExit):
        main(["sink", "--help"])
    listed = " ".join(capsys.readouterr().out.split()).split("default: all of ", 1)[1].rstrip(")").split(", ")
    assert sorted(listed) == sorted({table.name for _, table in SINKS})


@pytest.mark.parametrize(
    "args, says",
    [
        (["dlq", "replay"], "name what to replay"),
        (["dlq", "replay", "--reason", "typo"], "unknown DLQ reason typo"),
        (["dlq", "replay", "--topic", "md.bars.v9"], "unknown topic 'md.bars.v9'"),
        (["export", "trades", "--since", "yesterday"], "--since: not an ISO 8601 date"),
        (["export", "trades", "--period", "DAY"], "--period applies to 'performance' only"),
        (["replay", "bars.csv", "--kind", "bars", "--column", "Last=closing"], "--column Last=closing: bars have no such field"),
    ],
)
def test_arguments_checked_by_hand_exit_2_like_argparses_own(args, says, capsys):
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("tickwire: ") and says in err and err.count("\n") == 1


def test_a_setting_that_cannot_be_used_is_one_line_and_exit_2(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("TICKWIRE_LOG_LEVEL", "LOUD")
    assert main(["schemas", "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err == (
        "tickwire: TICKWIRE_LOG_LEVEL: 'LOUD' is not one of DEBUG, INFO, WARNING, ERROR, CRITICAL\n"
    )


@pytest.mark.parametrize("args", [["topics"], ["replay", "{bars}"], ["dlq", "replay", "--all"]])
def test_kafka_out_of_reach_is_one_line_with_the_reason(args, tmp_path):
    """No aiokafka ERROR line before it, no 'Unclosed AIOKafkaProducer' after it."""
    bars = tmp_path / "bars.csv"
    bars.write_text("symbol,timeframe,ts,open,high,low,close,volume\nSPY,1m,2024-01-02T14:30:00Z,1,2,0.5,1.5,10\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TICKWIRE_")}
    result = subprocess.run(
        [sys.executable, "-m", "tickwire.streams.cli", *(a.format(bars=bars) for a in args)],
        env={**env, "TICKWIRE_KAFKA_BOOTSTRAP": "127.0.0.1:1"},  # nothing listens there
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr.startswith('tickwire: cannot reach Kafka at 127.0.0.1:1: Unable connect to "127.0.0.1:1"')
    assert result.stderr.count("\n") == 1, result.stderr


@pytest.mark.parametrize("args, extra", [(["migrate"], "sink"), (["simulate"], "worker"), (["worker"], "worker")])
def test_a_command_without_its_extra_names_the_extra_to_install(tmp_path, args, extra):
    from tests.conftest import ROOT, WITHOUT_EXTRAS

    code = WITHOUT_EXTRAS + f"from tickwire.streams.cli import main\nsys.exit(main({args!r}))\n"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TICKWIRE_")} | {"TICKWIRE_KAFKA_BOOTSTRAP": "127.0.0.1:1"}
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env, timeout=60)
    assert run.returncode == 1 and f"pip install 'tickwire[{extra}]'" in run.stderr, run.stderr[-2000:]
    assert "Traceback" not in run.stderr


def test_the_light_commands_need_no_extra(tmp_path):
    from tests.conftest import ROOT, WITHOUT_EXTRAS

    code = WITHOUT_EXTRAS + f"from tickwire.streams.cli import main\nsys.exit(main(['schemas', '--out', {str(tmp_path)!r}]))\n"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert run.returncode == 0, run.stderr[-2000:]
    assert (tmp_path / "asyncapi.json").exists()
