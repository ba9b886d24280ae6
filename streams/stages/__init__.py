"""The registry: every stage the worker runs, each one module.

Adding a stage: its module here (a ``Stage`` subclass: inputs, state table, handler), one
line below, and the migration of the table its outputs land in. A worker runs every stage,
or those ``TICKWIRE_WORKER_STAGES`` names: a stage whose bursts would hold the others'
event loop (the correlations' step over 500 symbols) can run in processes of its own.
"""

from tickwire.schemas.settings import SettingsError
from tickwire.streams.stages.candles import Candles
from tickwire.streams.stages.correlations import CorrelationsStage
from tickwire.streams.stages.portfolios import PortfolioStage
from tickwire.streams.stages.statistics import ModelStatistics, StrategyStatistics
from tickwire.streams.stages.symbols import Symbols
from tickwire.streams.worker.stage import Stage

STAGES = (Symbols, Candles, ModelStatistics, StrategyStatistics, CorrelationsStage, PortfolioStage)


def selected(names: tuple[str, ...]) -> tuple[type[Stage], ...]:
    """The stages ``names`` picks (``TICKWIRE_WORKER_STAGES``; none: every stage), in the
    registry's order. Raises ``SettingsError`` naming an unknown one."""
    known = {stage.name: stage for stage in STAGES}
    unknown = [name for name in names if name not in known]
    if unknown:
        raise SettingsError(f"TICKWIRE_WORKER_STAGES: no stage {', '.join(map(repr, unknown))}; the stages are {', '.join(known)}")
    return tuple(stage for stage in STAGES if not names or stage.name in names)
