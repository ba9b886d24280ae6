"""``tickwire maintain --every`` as a service: it maintains at once and then each round,
counts its rounds, and a round the database refuses does not end it."""

from __future__ import annotations

import pytest

from tests.conftest import scraped, wait_for

pytestmark = pytest.mark.integration


def rounds(port: int, result: str) -> float:
    return scraped(port, f'tickwire_maintenance_runs_total{{result="{result}"}}')


async def test_maintain_keeps_running_and_counts_its_rounds(isolated, processes):
    _, port = processes.start("maintain", "--every", "1")

    async def two_rounds() -> bool:
        return rounds(port, "ok") >= 2

    assert await wait_for(two_rounds, timeout_s=60, check=processes.check_alive)
    assert rounds(port, "failed") == 0
    assert "partitions" in processes.logs() or "jobs" in processes.logs()  # its report, each round


async def test_a_round_the_database_refuses_is_counted_and_the_service_goes_on(isolated, processes):
    processes.extra_env["TICKWIRE_PG_DSN"] = "postgresql://tickwire@127.0.0.1:1/nowhere"
    try:
        _, port = processes.start("maintain", "--every", "1")
    finally:
        processes.extra_env.pop("TICKWIRE_PG_DSN")

    async def two_failures() -> bool:
        return rounds(port, "failed") >= 2

    assert await wait_for(two_failures, timeout_s=60, check=processes.check_alive)
