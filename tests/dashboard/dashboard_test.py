#!/usr/bin/env python3
"""Dashboard checks (ctest label "dashboard").

static: deploy/grafana/expertmesh-dashboard.json is well-formed (unique panel ids, Prometheus
  datasource variable, queries on every panel), has the required panels (A/B blends, per-expert
  heatmap, fan-out latency, TTFT/TPOT percentiles, errors by grpc_code, memory), every PromQL
  query parses (promtool check rules) and references only series of metrics defined in
  engine/metrics (the catalog printed by expertmesh-metrics-catalog --format=json).
live: expertmesh-metrics-demo exports every metric with live values; a Prometheus started on
  loopback (prometheus_harness.py) scrapes it and every dashboard query must return data.
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import prometheus_harness  # noqa: E402

KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "offset",
            "inf", "nan", "Inf", "NaN"}


def fail(message):
    print(f"FAIL {message}")
    sys.exit(1)


def metric_names(expr):
    """Metric names an instant-vector or range-vector selector in `expr` refers to."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)             # strings
    text = re.sub(r"\{[^}]*\}", " ", text)                       # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)                      # ranges, subqueries
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)  # label lists
    names = set()
    for match in re.finditer(r"(?<![\w.])[A-Za-z_:][A-Za-z0-9_:]*", text):
        name = match.group(0)
        if name in KEYWORDS or text[match.end():].lstrip().startswith("("):
            continue  # keyword, function or aggregation
        names.add(name)
    return names


def catalog(binary_dir):
    binary = binary_dir / "bin/expertmesh-metrics-catalog"
    if not binary.exists():
        fail(f"{binary} not built")
    entries = json.loads(subprocess.run([str(binary), "--format=json"], capture_output=True, text=True, check=True).stdout)
    series = {name: entry for entry in entries for name in entry["series"]}
    return entries, series


def check_static(source, binary_dir):
    dashboard_path = source / "deploy/grafana/expertmesh-dashboard.json"
    dashboard = json.loads(dashboard_path.read_text())
    entries, series = catalog(binary_dir)
    ids = set()
    queries = prometheus_harness.dashboard_queries(dashboard_path)
    if not dashboard.get("uid") or not dashboard.get("title"):
        fail("dashboard needs uid and title")
    if not any(v["name"] == "datasource" and v["type"] == "datasource" for v in dashboard["templating"]["list"]):
        fail("dashboard needs a Prometheus datasource variable")
    for panel in dashboard["panels"]:
        if panel["id"] in ids:
            fail(f"duplicate panel id {panel['id']}")
        ids.add(panel["id"])
        if panel["type"] == "row":
            continue
        if not panel.get("targets"):
            fail(f"panel '{panel['title']}' has no queries")
        if panel.get("datasource", {}).get("uid") != "${datasource}":
            fail(f"panel '{panel['title']}' must use the ${{datasource}} variable")
        grid = panel["gridPos"]
        if grid["x"] + grid["w"] > 24:
            fail(f"panel '{panel['title']}' is wider than the grid")

    used = set()
    for title, expr in queries:
        names = metric_names(prometheus_harness.substitute_variables(expr))
        if not names:
            fail(f"panel '{title}': no metric in {expr}")
        for name in names:
            if name not in series:
                fail(f"panel '{title}': '{name}' is not a series of any metric defined in engine/metrics")
            used.add(series[name]["name"])
            # Histograms are queried through their buckets (quantiles) or _sum/_count, counters through rate/increase.
            if series[name]["type"] == "counter" and not re.search(rf"(rate|increase)\(\s*{name}\b", expr):
                fail(f"panel '{title}': counter {name} must be used through rate() or increase()")
    for variable in dashboard["templating"]["list"]:
        for name in metric_names(re.sub(r"label_values\(([^,]+),.*", r"\1", variable.get("definition", ""))):
            if name not in series:
                fail(f"variable {variable['name']}: unknown metric {name}")

    heatmaps = [p for p in dashboard["panels"] if p["type"] == "heatmap"]
    required = {
        "A/B traffic share by blend": lambda: any("expertmesh_requests_total" in e and "blend" in e and "/" in e for _, e in queries),
        "A/B latency by blend": lambda: any("expertmesh_time_to_first_token_seconds_bucket" in e and "by (blend, le)" in e for _, e in queries),
        "per-expert load heatmap": lambda: any("expertmesh_moe_expert_tokens_total" in t["expr"] for p in heatmaps for t in p["targets"]),
        "fan-out latency per shard": lambda: any("expertmesh_moe_fanout_seconds_bucket" in e and "shard" in e for _, e in queries),
        "TTFT percentiles": lambda: sum("expertmesh_time_to_first_token_seconds_bucket" in e for _, e in queries) >= 3,
        "TPOT percentiles": lambda: sum("expertmesh_time_per_output_token_seconds_bucket" in e for _, e in queries) >= 3,
        "errors by grpc_code": lambda: any("grpc_server_handled_total" in e and "grpc_code" in e for _, e in queries),
        "memory": lambda: {"process_resident_memory_bytes", "expertmesh_device_memory_used_bytes",
                           "expertmesh_blend_weight_bytes", "expertmesh_weight_resident_bytes"} <= used,
    }
    for what, present in required.items():
        if not present():
            fail(f"the dashboard has no {what} panel")

    promtool = shutil.which("promtool")
    if not promtool:
        fail("promtool not found: run scripts/install-deps (Debian package prometheus)")
    with tempfile.TemporaryDirectory() as work:
        rules = {"groups": [{"name": "dashboard", "rules": [
            {"record": f"dashboard:query_{i}", "expr": prometheus_harness.substitute_variables(expr)}
            for i, (_, expr) in enumerate(queries)]}]}
        path = Path(work) / "rules.yml"
        path.write_text(json.dumps(rules, indent=1))
        result = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True)
        if result.returncode != 0:
            fail(f"promtool rejects a dashboard query:\n{result.stdout}{result.stderr}")
    unused = sorted(e["name"] for e in entries if e["name"] not in used)
    print(f"ok   {len(queries)} queries in {len(ids)} panels parse and use {len(used)} catalog metrics")
    if unused:
        print(f"note metrics not on the dashboard: {', '.join(unused)}")


def check_live(source, binary_dir):
    demo_binary = binary_dir / "bin/expertmesh-metrics-demo"
    if not demo_binary.exists():
        fail(f"{demo_binary} not built")
    demo = subprocess.Popen([str(demo_binary), "--metrics_listen=127.0.0.1:0", "--round_ms=100", "--lifetime_seconds=180"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    prometheus = None
    try:
        line = demo.stdout.readline()
        match = re.search(r"http://([\d.]+:\d+)/metrics", line)
        if not match:
            fail(f"expertmesh-metrics-demo did not report its address: {line}{demo.stdout.read() if demo.poll() is not None else ''}")
        prometheus = prometheus_harness.Prometheus([("expertmesh-demo", match.group(1))])
        print(f"prometheus on 127.0.0.1:{prometheus.port} scraping {match.group(1)}")
        prometheus.wait_for_targets()
        time.sleep(6)  # several scrapes, so rate() over 10 s has points
        problems = prometheus_harness.check_queries(
            prometheus, prometheus_harness.dashboard_queries(source / "deploy/grafana/expertmesh-dashboard.json"),
            rate_interval="10s", require_nonempty=True)
        # The harness must also see a failing query as failing (it is not vacuous).
        bad = prometheus.query("expertmesh_no_such_metric_total")
        if bad.get("status") != "success" or bad["data"]["result"]:
            problems.append(("self-check", "expertmesh_no_such_metric_total", "an unknown metric returned data"))
        if prometheus.query("rate(").get("status") != "error":
            problems.append(("self-check", "rate(", "a malformed query did not fail"))
    finally:
        if prometheus:
            prometheus.stop()
        demo.terminate()
        demo.wait(timeout=10)
    for title, expr, problem in problems:
        print(f"FAIL {title}: {problem}: {expr}")
    if problems:
        sys.exit(1)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("check", choices=["static", "live"])
    parser.add_argument("--source", type=Path, default=Path(os.environ.get("EXPERTMESH_SOURCE_DIR", ".")))
    parser.add_argument("--binary-dir", type=Path, default=Path(os.environ.get("EXPERTMESH_BINARY_DIR", "build")))
    args = parser.parse_args()
    source, binary_dir = args.source.resolve(), args.binary_dir.resolve()
    check_static(source, binary_dir) if args.check == "static" else check_live(source, binary_dir)
    print("PASS")


if __name__ == "__main__":
    main()
