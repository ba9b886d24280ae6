"""Reading replay files: every bad row reported with its line, good rows decoded the same from CSV and Parquet."""

from __future__ import annotations

import sys
from datetime import datetime, timezone
from pathlib import Path

import msgspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tickwire.schemas.market import Bar
from tickwire.schemas.settings import Settings
from tickwire.schemas.signals import Prediction
from tickwire.schemas.trades import Trade
from tickwire.streams import replay
from tickwire.streams.cli import main
from tickwire.streams.replay import ReplayError, count_rows, publish_file, read_rows

CSV = """Date,Open,High,Low,Close,Volume
2024-01-02T00:00:00Z,10,11,9,10.5,100
2024-01-03T00:00:00Z,10.5,12,10,11,200
2024-01-04T00:00:00Z,abc,12,10,11,200
2024-01-05T00:00:00Z,11,10,12,11,200
1960-01-01T00:00:00Z,11,12,10,11,200
2024-01-08T00:00:00Z,11,12,10,11,
"""


def _csv(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bars.csv"
    path.write_text(text)
    return path


def test_csv_rows_keep_their_line_numbers_and_reasons(tmp_path):
    path = _csv(tmp_path, CSV.replace("Date", "ts"))
    rows = list(read_rows(path, Bar, defaults={"symbol": "GOOG", "timeframe": "1d"}))
    assert [r.line for r in rows] == [2, 3, 4, 5, 6, 7]
    good = [r.message for r in rows if r.message]
    assert [b.close for b in good] == [10.5, 11.0]
    assert good[0] == Bar(symbol="GOOG", timeframe="1d", ts=datetime(2024, 1, 2, tzinfo=timezone.utc), open=10, high=11, low=9, close=10.5, volume=100)
    reasons = {r.line: r.error.reason for r in rows if r.error}
    assert reasons == {4: "schema", 5: "invalid_value", 6: "bad_timestamp", 7: "schema"}
    assert "volume" in next(r.error.detail for r in rows if r.line == 7)
    assert count_rows(path) == 6


def test_skip_resumes_after_acknowledged_rows(tmp_path):
    path = _csv(tmp_path, CSV.replace("Date", "ts"))
    rows = list(read_rows(path, Bar, defaults={"symbol": "GOOG"}, skip=4))
    assert [r.line for r in rows] == [6, 7]


def test_parquet_reads_like_csv(tmp_path):
    path = tmp_path / "trades.parquet"
    table = pa.table(
        {
            "symbol": ["AAPL", "AAPL", "AAPL"],
            "ts": [datetime(2024, 1, 2, 14, 30, s, tzinfo=timezone.utc) for s in range(3)],
            "price": [190.5, -1.0, 190.7],
            "size": [10, 5, 7],
            "trade_id": ["t1", "t2", "t3"],
        }
    )
    pq.write_table(table, path)
    rows = list(read_rows(path, Trade, defaults={}))
    assert [r.line for r in rows] == [1, 2, 3]
    assert rows[1].error.reason == "schema"
    assert rows[2].message == Trade(symbol="AAPL", ts=datetime(2024, 1, 2, 14, 30, 2, tzinfo=timezone.utc), price=190.7, size=7, trade_id="t3")
    assert count_rows(path) == 3


def test_unreadable_files_are_refused_as_a_whole(tmp_path):
    with pytest.raises(ReplayError, match="no such file"):
        list(read_rows(tmp_path / "missing.csv", Bar, defaults={}))
    with pytest.raises(ReplayError, match="header"):
        list(read_rows(_csv(tmp_path, ""), Bar, defaults={}))
    binary = tmp_path / "binary.csv"
    binary.write_bytes(b"ts,open\n\xff\xfe,1\n")
    with pytest.raises(ReplayError, match="not UTF-8"):
        list(read_rows(binary, Bar, defaults={}))


def test_replay_command_names_bad_arguments(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["replay", str(tmp_path / "x.csv"), "--kind", "quotes"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'quotes'" in capsys.readouterr().err
    assert main(["replay", str(tmp_path / "missing.csv")]) == 1
    assert "missing.csv: no such file" in capsys.readouterr().err


def test_prediction_features_are_json_cells(tmp_path):
    path = tmp_path / "predictions.csv"
    path.write_text(
        "prediction_id,model_version,model_type,symbol,predicted_at,prediction_horizon_minutes,predicted_direction,confidence_score,feature_vector\n"
        '6f1c2a34-0c1e-4f5e-9a57-1d2b3c4d5e6f,m1,gbm,AAPL,2024-01-02T14:30:00Z,15,LONG,0.7,"{""rsi"": 61.5}"\n'
        '6f1c2a34-0c1e-4f5e-9a57-1d2b3c4d5e70,m1,gbm,AAPL,2024-01-02T14:31:00Z,15,LONG,0.7,"{rsi: broken"\n'
    )
    rows = list(read_rows(path, Prediction, defaults={}))
    assert rows[0].message.feature_vector == {"rsi": 61.5}
    assert rows[1].error.reason == "schema" and rows[1].line == 3


def test_a_vendors_headers_map_onto_fields_and_a_dry_run_needs_no_broker(tmp_path, capsys, monkeypatch):
    path = _csv(tmp_path, "Date,Open,High,Low,Last,Vol,Adj Close\n"
                          "1999-01-04,10,11,9,10.5,1000,10.1\n"
                          "1999-01-05,10,9,11,10.5,1000,10.1\n")
    columns = {"Date": "ts", "Last": "close", "Vol": "volume"}
    rows = list(read_rows(path, Bar, defaults={"symbol": "SPY", "timeframe": "1d"}, columns=columns))
    assert rows[0].message.close == 10.5 and rows[0].message.ts == datetime(1999, 1, 4, tzinfo=timezone.utc)
    assert rows[1].error.reason == "invalid_value" and rows[1].line == 3  # high below low
    with pytest.raises(ReplayError, match="has no field 'closing'"):
        list(read_rows(path, Bar, defaults={}, columns={"Last": "closing"}))
    monkeypatch.setenv("TICKWIRE_KAFKA_BOOTSTRAP", "127.0.0.1:1")  # nothing listens there: a dry run never asks
    args = ["replay", str(path), "--symbol", "SPY", "--timeframe", "1d", "--dry-run",
            "--column", "Date=ts", "--column", "Last=close", "--column", "Vol=volume"]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert f"{path}:3: rejected (invalid_value)" in err and "1 valid, 1 rejected (dry run: nothing sent)" in err
    with pytest.raises(SystemExit):
        main(["replay", str(path), "--column", "Date"])


@pytest.mark.parametrize("terminal", [True, False])
async def test_the_progress_line_is_for_a_terminal_only(tmp_path, capsys, monkeypatch, terminal):
    class Producer:  # the broker's stand-in
        def __init__(self, **options): ...
        async def start(self): ...
        async def send(self, topic, key, value): ...
        async def flush(self): ...
        async def stop(self): ...

    monkeypatch.setattr(replay, "AIOKafkaProducer", Producer)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: terminal)
    path = tmp_path / "trades.csv"
    path.write_text("symbol,ts,price,size,trade_id\n" + "".join(f"AAPL,2024-01-02T14:30:0{s}Z,190.5,1,t{s}\n" for s in range(4)))
    assert await publish_file(Settings(), path, "trades", speed=2.5) == 0  # 3 s of trades in 1.2 s: one progress report
    err = capsys.readouterr().err
    assert ("4/4 rows" in err, err.startswith("\r")) == (terminal, terminal)
    assert f"{path}: 4 sent to md.trades.v1, 0 rejected" in err


def test_decision_files_replay_as_their_tagged_messages(tmp_path):
    from tickwire.schemas.codec import Codec
    from tickwire.schemas.decisions import ExitDecision, SizingDecision, SizingMessage

    path = tmp_path / "sizing.csv"
    path.write_text(
        "decision_id,strategy_id,symbol,ts,account_value,risk_per_trade,stop_distance,quantity\n"
        "00000000-0000-0000-0000-000000000001,s1,AAPL,2024-01-02T15:00:00Z,100000,0.01,2.5,400\n"
        "00000000-0000-0000-0000-000000000002,s1,AAPL,2024-01-02T15:01:00Z,100000,2,2.5,400\n"
    )
    rows = list(read_rows(path, replay.KINDS["sizing"].message_type, defaults={}))
    assert rows[1].error.reason == "invalid_value"  # a risk of twice the account
    sized = rows[0].message
    assert isinstance(sized, SizingDecision) and sized.quantity * sized.stop_distance == 1000.0
    # Sent as the worker reads it: tagged, so exec.sizing.v1's union takes it as a decision.
    assert Codec(SizingMessage).decode(msgspec.json.encode(sized), now=datetime(2024, 2, 1, tzinfo=timezone.utc)) == sized
    exits = tmp_path / "exits.csv"
    exits.write_text(
        "exit_id,trade_id,strategy_id,symbol,ts,reason,price,quantity,partial\n"
        "00000000-0000-0000-0000-000000000003,00000000-0000-0000-0000-000000000009,s1,AAPL,2024-01-02T16:00:00Z,target,191.5,200,true\n"
    )
    (row,) = read_rows(exits, ExitDecision, defaults={})
    assert (row.message.reason, row.message.partial, row.message.quantity) == ("target", True, 200)
