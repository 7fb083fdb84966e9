"""docs/grafana/resilient_conn.json: valid, importable, and only names metrics we export."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

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


PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None and os.environ.get("RESILIENT_CONN_REQUIRE_PROMTOOL") != "1",
    reason="needs promtool (Debian package 'prometheus'); CI installs it",
)
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__range": "1h", "$component": ".*"}


def concrete(expr: str) -> str:
    """A panel query with Grafana's variables replaced by values Prometheus accepts."""
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    return expr


def promtool(tmp_path: Path, rules: list[dict[str, str]], tests: list[dict[str, Any]]) -> None:
    """Run `promtool test rules` on the given recording rules and PromQL expression tests."""
    assert PROMTOOL is not None, "RESILIENT_CONN_REQUIRE_PROMTOOL=1 but no promtool found"
    # JSON is YAML: no YAML library needed
    (tmp_path / "rules.yml").write_text(json.dumps({"groups": [{"name": "board", "rules": rules}]}))
    suite = {"rule_files": ["rules.yml"], "evaluation_interval": "1m", "tests": tests}
    (tmp_path / "tests.yml").write_text(json.dumps(suite))
    done = subprocess.run(
        [PROMTOOL, "test", "rules", "tests.yml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


@needs_promtool
def test_every_query_is_valid_promql_and_the_state_encodings_read_right(tmp_path: Path) -> None:
    """promtool parses every panel query (as a recording rule) and evaluates the ones with a
    trick in them on synthetic series: the state-timeline codes, the open-circuit count, the
    dial rate and the share of time disconnected."""
    board = json.loads(BOARD.read_text())
    exprs = [concrete(t["expr"]) for p in panels(board) for t in p.get("targets", [])]
    rules = [{"record": f"board:panel_{i}", "expr": e} for i, e in enumerate(exprs)]
    by_title = {
        p["title"]: concrete(p["targets"][0]["expr"]) for p in panels(board) if p.get("targets")
    }
    state = 'resilient_conn_connection_state{{component="feed",state="{}"}}'
    conn_states = [
        "connected",
        "connecting",
        "backoff",
        "circuit_open",
        "closing",
        "closed",
        "failed",
        "idle",
    ]
    series = [
        {"series": state.format(s), "values": "1x10" if s == "backoff" else "0x10"}
        for s in conn_states
    ]
    series += [
        {"series": 'resilient_conn_breaker_state{component="feed",state="open"}', "values": "1x10"},
        {
            "series": 'resilient_conn_breaker_state{component="feed",state="closed"}',
            "values": "0x10",
        },
        {"series": 'resilient_conn_breaker_state{component="geo",state="open"}', "values": "0x10"},
        {
            "series": 'resilient_conn_breaker_state{component="geo",state="closed"}',
            "values": "1x10",
        },
        # 6 dials a minute; 30 s disconnected per minute
        {"series": 'resilient_conn_connection_dials_total{component="feed"}', "values": "0+6x10"},
        {
            "series": 'resilient_conn_connection_disconnected_seconds_total{component="feed"}',
            "values": "0+30x10",
        },
    ]
    expect = [
        ("Connection state per component", [({"component": "feed"}, 3)]),
        ("Open circuits", [({}, 1)]),
        ("Dials per second", [({"component": "feed"}, 0.1)]),
        ("Time disconnected", [({"component": "feed"}, 0.5)]),
    ]
    tests = [
        {
            "interval": "1m",
            "input_series": series,
            "promql_expr_test": [
                {
                    "expr": by_title[title],
                    "eval_time": "5m",
                    "exp_samples": [
                        {"labels": _labels(labels), "value": value} for labels, value in samples
                    ],
                }
                for title, samples in expect
            ],
        }
    ]
    promtool(tmp_path, rules, tests)


def _labels(labels: dict[str, str]) -> str:
    inner = ",".join(f'{k}="{v}"' for k, v in labels.items())
    return "{" + inner + "}"
