"""deploy/grafana/zfleet.json asks Prometheus only for series zfleet really exports.

The series come from the code itself: the worker's registry (workers/metrics.py, as
prometheus_client names each family's samples: ``_total`` for counters, ``_bucket``/``_sum``/
``_count`` for histograms) and every ``_gauge(name, doc, labels)`` the fleet collector builds
(coordinator/metrics.py, read from its syntax tree because those families only exist during a
scrape of a live Redis; cross-checked against the families ``job_metrics`` really returns). Every
panel query and template query must name at least one of them, and every label it filters or
groups by must be one that series carries.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
from pathlib import Path
from typing import Any

from prometheus_client.registry import CollectorRegistry

import coordinator.metrics
import workers.metrics
from coordinator.metrics import job_metrics
from tests.conftest import need_binary

DASHBOARD = Path(__file__).parents[2] / "deploy" / "grafana" / "zfleet.json"
_SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count",
             "_created"), "gauge": ("",), "summary": ("_sum", "_count", "_created")}  # fmt: skip
_NAME = re.compile(r"\b(zfleet_[a-z0-9_]+)\b(\{[^}]*\})?")
_MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")
_GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")


def worker_series(registry: CollectorRegistry = workers.metrics.REGISTRY) -> dict[str, set[str]]:
    """Sample name -> label names, for every metric in the worker's registry."""
    out: dict[str, set[str]] = {}
    for collector in list(registry._collector_to_names):  # every registered metric object
        labels = set(getattr(collector, "_labelnames", ()))
        for family in collector.describe():
            for suffix in _SUFFIXES[family.type]:
                extra = {"le"} if suffix == "_bucket" else set()
                out[family.name + suffix] = labels | extra
    return out


def coordinator_series(path: Path = Path(coordinator.metrics.__file__)) -> dict[str, set[str]]:
    """Gauge name -> label names, for every ``_gauge(...)`` call in coordinator/metrics.py."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out: dict[str, set[str]] = {}
    for fn in ast.walk(tree):
        if not isinstance(fn, ast.FunctionDef):
            continue
        lists = {t.id: [e.value for e in node.value.elts if isinstance(e, ast.Constant)]
                 for node in ast.walk(fn) if isinstance(node, ast.Assign)
                 and isinstance(node.value, ast.List)
                 for t in node.targets if isinstance(t, ast.Name)}  # fmt: skip
        for call in ast.walk(fn):
            if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name)
                    and call.func.id == "_gauge"):
                continue
            name, labels = call.args[0], call.args[2]
            assert isinstance(name, ast.Constant), ast.dump(call)
            if isinstance(labels, ast.List):
                values = [e.value for e in labels.elts if isinstance(e, ast.Constant)]
            else:
                assert isinstance(labels, ast.Name), ast.dump(call)
                values = lists[labels.id]
            out[str(name.value)] = {str(v) for v in values}
    return out


def defined_series() -> dict[str, set[str]]:
    return worker_series() | coordinator_series()


def expressions(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, PromQL) for every panel target and every query variable."""
    out = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            out.append((f"panel {panel['title']!r} {target['refId']}", target["expr"]))
    for var in dashboard["templating"]["list"]:
        query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
        out.append((f"variable ${var['name']}", query))
    return out


def problems(expr: str, series: dict[str, set[str]]) -> list[str]:
    """What is wrong with one expression: unknown series, labels the series do not carry."""
    found = _NAME.findall(expr)
    if not found:
        return ["names no zfleet series"]
    out = []
    carried: set[str] = set()
    for name, selector in found:
        if name not in series:
            out.append(f"{name} is not a series zfleet defines")
            continue
        carried |= series[name]
        for label in _MATCHER.findall(selector):
            if label not in series[name]:
                out.append(f"{name} has no label {label!r}")
    for group in _GROUPING.findall(expr):
        for label in filter(None, (g.strip() for g in group.split(","))):
            if label not in carried:
                out.append(f"no series in it has the label {label!r} it groups by")
    values = re.match(r"label_values\((zfleet_[a-z0-9_]+)\s*,\s*([a-z_]+)\)", expr)
    if values and values[2] not in series.get(values[1], set()):
        out.append(f"{values[1]} has no label {values[2]!r}")
    return out


def test_every_dashboard_expression_names_real_series() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    series = defined_series()
    exprs = expressions(dashboard)
    assert len(exprs) > 20
    bad = {where: p for where, expr in exprs if (p := problems(expr, series))}
    assert not bad, json.dumps(bad, indent=2)


def test_the_dashboard_covers_transfers_bytes_lag_and_step_outcomes() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    used = {name for _, expr in expressions(dashboard) for name, _ in _NAME.findall(expr)}
    for wanted in ("zfleet_worker_transfers_total", "zfleet_worker_transfer_stream_bytes_total",
                   "zfleet_transfer_bytes", "zfleet_replication_lag_seconds",
                   "zfleet_replication_snapshots_behind", "zfleet_worker_steps_total",
                   "zfleet_steps", "zfleet_step_errors", "zfleet_worker_up",
                   "zfleet_failovers", "zfleet_failover_time_to_writable_seconds"):  # fmt: skip
        assert wanted in used, wanted
    assert all(p["datasource"]["uid"] == "${DS_PROMETHEUS}"
               for p in dashboard["panels"] if p["type"] != "row")  # importable anywhere


def test_the_series_are_read_from_the_code() -> None:
    series = coordinator_series()
    # what job_metrics really builds is what the syntax tree found, labels included
    for family in job_metrics([]):
        assert family.name in series, family.name
    assert series["zfleet_replication_lag_seconds"] == {"job_name", "dataset", "target"}
    assert worker_series()["zfleet_worker_transfer_seconds_bucket"] == {"le"}
    assert "target" in worker_series()["zfleet_worker_transfer_stream_bytes_total"]


def test_the_checker_catches_mistakes() -> None:
    series = defined_series()
    assert problems("rate(zfleet_worker_transfer_stream_bytes[5m])", series)  # no _total
    assert problems('zfleet_worker_up{hostname="a"}', series)
    assert problems("sum by (dataset) (zfleet_worker_up)", series)
    assert problems("up", series)
    assert problems("label_values(zfleet_worker_up, target)", series)
    assert not problems('sum by (host) (zfleet_worker_up{host=~"$host"})', series)


def test_prometheus_parses_every_expression(tmp_path: Path) -> None:
    """promtool (Debian's prometheus package) parses each query as a recording rule's expression."""
    promtool = need_binary("promtool")
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    rules = [{"record": f"zfleet:dashboard_check:{i}",
              "expr": expr.replace("$host", ".*")}  # what Grafana sends for "All"
             for i, (_, expr) in enumerate(expressions(dashboard))
             if not expr.startswith("label_values(")]  # a Grafana function, not PromQL
    path = tmp_path / "rules.yml"
    path.write_text(json.dumps({"groups": [{"name": "dashboard", "rules": rules}]}))  # JSON is YAML
    done = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True,
                          timeout=60, check=False)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{len(rules)} rules found" in done.stdout


def test_role_changes_are_counted_by_job_kind_and_outcome() -> None:
    from coordinator.engine import Job
    from coordinator.metrics import role_metrics

    jobs = [  # newest first, as the job store lists them
        Job(id="f2", name="img", kind="failover", status="succeeded",
            report={"time_to_writable": 0.4, "data_loss_window": 7.5}),
        Job(id="f1", name="img", kind="failover", status="succeeded",
            report={"time_to_writable": 9.0, "data_loss_window": 60.0}),
        Job(id="s1", name="img", kind="switchover", status="failed"),
        Job(id="r1", name="img", kind="rejoin", status="succeeded"),
        Job(id="y1", name="img", kind="sync", status="succeeded"),
    ]  # fmt: skip
    fam, ttw, window = role_metrics(jobs)
    counts = {tuple(s.labels.values()): s.value for s in fam.samples}
    assert counts == {("img", "failover", "succeeded"): 2, ("img", "rejoin", "succeeded"): 1,
                      ("img", "switchover", "failed"): 1}  # fmt: skip
    assert [(s.labels, s.value) for s in ttw.samples] == [({"job_name": "img",
                                                            "kind": "failover"}, 0.4)]  # fmt: skip
    assert [s.value for s in window.samples] == [7.5]
