import logging

from tickwire.schemas.kafka import start_kafka
from tickwire.schemas.settings import Settings


async def test_lines_held_back_while_starting_are_logged_when_another_broker_answers(caplog):
    class AnsweredBySecondBroker:
        async def start(self) -> None:
            logging.getLogger("aiokafka").error('Unable connect to "kafka-1:9092": refused')

    await start_kafka(Settings(), AnsweredBySecondBroker())
    assert [r.getMessage() for r in caplog.records] == ['Unable connect to "kafka-1:9092": refused']
