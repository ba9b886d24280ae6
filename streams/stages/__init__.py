"""The registry: every stage the worker runs, each one module.

Adding a stage: its module here (a ``Stage`` subclass: inputs, state table, handler), one
line below, and the migration of the table its outputs land in.
"""

from tickwire.streams.stages.candles import Candles
from tickwire.streams.stages.correlations import CorrelationsStage
from tickwire.streams.stages.portfolios import PortfolioStage
from tickwire.streams.stages.statistics import ModelStatistics, StrategyStatistics
from tickwire.streams.stages.symbols import Symbols

STAGES = (Symbols, Candles, ModelStatistics, StrategyStatistics, CorrelationsStage, PortfolioStage)
