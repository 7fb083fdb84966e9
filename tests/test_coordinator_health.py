"""A recovery coordinator's health in a HealthRegistry: circuit phase and store fallback."""

from __future__ import annotations

import json

import pytest

from resilient_conn import (
    BreakerState,
    CoordinatorHealth,
    HealthRegistry,
    HealthStatus,
    RecoveryCoordinator,
    RecoverySettings,
    RedisStore,
    coordinator_report,
)
from resilient_conn.testing.redis_server import free_port


@pytest.mark.anyio
async def test_phases_map_to_statuses() -> None:
    """Closed is HEALTHY, open is UNHEALTHY (breaker_state OPEN), half-open DEGRADED."""
    coordinator = RecoveryCoordinator("feed", settings=RecoverySettings(failure_threshold=1))
    report = coordinator_report(coordinator)
    assert (report.status, report.breaker_state) == (HealthStatus.HEALTHY, BreakerState.CLOSED)
    async with coordinator.permit("a") as permit:
        await permit.failed()
    report = coordinator_report(coordinator)
    assert report.status is HealthStatus.UNHEALTHY
    assert report.breaker_state is BreakerState.OPEN
    assert report.consecutive_failures == 0
    assert report.kind == "coordinator"
    assert "shared circuit open" in report.detail


@pytest.mark.anyio
async def test_store_fallback_is_degraded_in_a_registry() -> None:
    """A Redis store that cannot be reached makes the coordinator DEGRADED with the error,
    and a registry aggregates it like any component (JSON-safe)."""
    async with RedisStore(f"redis://127.0.0.1:{free_port()}/0", op_timeout=0.3) as store:
        coordinator = RecoveryCoordinator("feed", store=store)
        registry = HealthRegistry()
        registry.register("feed-recovery", CoordinatorHealth(coordinator), critical=False)
        report = registry.health()
        component = report.components["feed-recovery"]
        assert component.status is HealthStatus.DEGRADED
        assert "store unreachable, deciding locally" in component.detail
        assert component.last_error
        checked = await registry.check_all(5)
        assert checked.components["feed-recovery"].status is HealthStatus.DEGRADED
        json.dumps(report.to_dict())


def test_adapter_refuses_other_objects() -> None:
    """CoordinatorHealth takes a RecoveryCoordinator only."""
    with pytest.raises(TypeError, match="RecoveryCoordinator"):
        CoordinatorHealth(object())  # type: ignore[arg-type]
