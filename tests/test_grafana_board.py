"""docs/grafana/resilient_conn.json: valid, importable, and only names metrics we export."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from resilient_conn import CircuitBreaker, HealthRegistry, ResiliencePolicy, ResilientConnection
from resilient_conn.health.prometheus import render

BOARD = Path(__file__).parent.parent / "docs" / "grafana" / "resilient_conn.json"


def exported_metric_names() -> set[str]:
    """Every metric family render() writes, counters that appear only once non-zero included."""
    registry = HealthRegistry(name="svc")
    registry.register("conn", ResilientConnection("ws://127.0.0.1:9/"))
    registry.register("breaker", CircuitBreaker())
    registry.register("policy", ResiliencePolicy(name="p"))
    metrics = registry.metrics()
    snapshot = metrics["components"]["conn"]["connection"]
    snapshot["rtt"] = 0.01  # written only once measured
    stats = snapshot["stats"]
    stats["failures"] = {"refused": 1}
    stats["dead_letters"] = {"overflow": 1}
    text = render(metrics)
    return {line.split(" ")[2] for line in text.splitlines() if line.startswith("# TYPE ")}


def panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    """All panels, rows' children included."""
    found: list[dict[str, Any]] = []
    for panel in board["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))
    return found


def test_the_board_has_the_on_call_panels_and_an_importable_shape() -> None:
    """The on-call panels the issue lists are there; the data source is an import input."""
    board = json.loads(BOARD.read_text())
    assert board["uid"] == "resilient-conn"
    assert [i["name"] for i in board["__inputs"]] == ["DS_PROMETHEUS"]
    titles = {p["title"] for p in panels(board)}
    for wanted in (
        "Connections by state",
        "Breaker openings",
        "Dials per second",
        "Dead letters by reason",
        "Time disconnected",
    ):
        assert wanted in titles
    ids = [p["id"] for p in panels(board)]
    assert len(ids) == len(set(ids))
    for panel in panels(board):
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
            assert panel["targets"], panel["title"]


def test_every_query_names_a_metric_the_library_exports() -> None:
    """No panel queries a metric name render() does not write (the board cannot drift)."""
    board = json.loads(BOARD.read_text())
    exported = exported_metric_names()
    queries = [t["expr"] for p in panels(board) for t in p.get("targets", [])]
    queries.append(board["templating"]["list"][0]["definition"])
    used = {name for q in queries for name in re.findall(r"resilient_conn_[a-z_]+", q)}
    assert used, "no query found"
    assert used - exported == set()
