"""The table contracts' registry of sink pipelines."""

from tickwire.schemas.tables import MARKET_CONDITIONS, MARKET_CONTEXT, SINKS, sink_group_name
from tickwire.schemas.topics import CONDITIONS, CORRELATION_CONTEXT


def test_every_sink_pipeline_has_a_consumer_group_of_its_own():
    # market_conditions is filled from two topics: sharing a group, each pipeline's joins and
    # leaves rebalanced the other (seen as a sink stalled in a rebalance in the crash test).
    groups = [sink_group_name(topic, table) for topic, table in SINKS]
    assert len(groups) == len(set(groups))
    assert sink_group_name(CONDITIONS, MARKET_CONDITIONS) == "market_conditions"  # unchanged: no offsets lost on upgrade
    assert sink_group_name(CORRELATION_CONTEXT, MARKET_CONTEXT) == "market_conditions.md.correlation_context.v1"
