#!/usr/bin/env python3
"""A throwaway Prometheus on loopback that scrapes given targets, and the dashboard's queries.

Used by dashboard_test.py (live check against expertmesh-metrics-demo) and, in phase 2, against
the real services:

    python3 tests/dashboard/prometheus_harness.py --target router=127.0.0.1:9464 \
        --target attention=127.0.0.1:9465 --target expert=127.0.0.1:9466 --target expert=127.0.0.1:9467 \
        --dashboard deploy/grafana/expertmesh-dashboard.json --settle-seconds 20

Prometheus is Debian's `prometheus` package, started with a generated config (scrape every
second, job label = the name given with --target) and a temporary data directory; it is stopped
on exit. Grafana variables in the queries are replaced: $__rate_interval and $__interval by
--rate-interval, every other variable ($blend, $layer, ...) by the regex ".*".
"""
import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def dashboard_queries(path):
    """[(panel title, expr)] of every target of every panel (rows included)."""
    dashboard = json.loads(Path(path).read_text())
    queries = []

    def walk(panels):
        for panel in panels:
            for target in panel.get("targets", []):
                if target.get("expr"):
                    queries.append((panel.get("title", "?"), target["expr"]))
            walk(panel.get("panels", []))

    walk(dashboard.get("panels", []))
    return queries


def substitute_variables(expr, rate_interval="1m"):
    expr = re.sub(r"\$\{?__(rate_interval|interval|range)\}?", rate_interval, expr)
    return re.sub(r"\$\{?[A-Za-z_]\w*\}?", ".*", expr)


class Prometheus:
    def __init__(self, targets, scrape_interval="1s"):
        """targets: [(job, "host:port")]."""
        binary = shutil.which("prometheus")
        if not binary:
            raise RuntimeError("prometheus not found: run scripts/install-deps (Debian package prometheus)")
        self.work = Path(tempfile.mkdtemp(prefix="expertmesh-prometheus-"))
        jobs = {}
        for job, address in targets:
            jobs.setdefault(job, []).append(address)
        config = {"global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
                  "scrape_configs": [{"job_name": job, "static_configs": [{"targets": addresses}]}
                                     for job, addresses in jobs.items()]}
        (self.work / "prometheus.yml").write_text(json.dumps(config, indent=2))  # JSON is YAML
        self.port = free_port()
        self.log = open(self.work / "prometheus.log", "w")
        self.process = subprocess.Popen(
            [binary, f"--config.file={self.work / 'prometheus.yml'}", f"--storage.tsdb.path={self.work / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            stdout=self.log, stderr=subprocess.STDOUT)
        self._wait_ready()

    def _wait_ready(self, timeout=60):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"prometheus exited: {(self.work / 'prometheus.log').read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError("prometheus not ready within 60 s")

    def query(self, expr):
        url = f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as error:
            return json.loads(error.read() or b'{"status": "error", "error": "HTTP error"}')

    def wait_for_targets(self, timeout=30):
        deadline = time.time() + timeout
        while time.time() < deadline:
            result = self.query("up").get("data", {}).get("result", [])
            if result and all(sample["value"][1] == "1" for sample in result):
                return result
            time.sleep(0.5)
        raise RuntimeError(f"scrape targets not all up: {self.query('up')}")

    def stop(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()
        shutil.rmtree(self.work, ignore_errors=True)


def check_queries(prometheus, queries, rate_interval, require_nonempty, retry_seconds=20):
    """Runs every query; returns [(title, expr, problem)]. Empty results are retried a while."""
    problems = []
    deadline = time.time() + retry_seconds
    for title, expr in queries:
        concrete = substitute_variables(expr, rate_interval)
        while True:
            answer = prometheus.query(concrete)
            if answer.get("status") != "success":
                problems.append((title, concrete, f"error: {answer.get('error')}"))
                break
            if answer["data"]["result"] or not require_nonempty:
                print(f"ok   [{len(answer['data']['result'])} series] {title}: {concrete}")
                break
            if time.time() > deadline:
                problems.append((title, concrete, "no data"))
                break
            time.sleep(1)
    return problems


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", action="append", required=True, help="JOB=HOST:PORT (repeatable)")
    parser.add_argument("--dashboard", default="deploy/grafana/expertmesh-dashboard.json")
    parser.add_argument("--settle-seconds", type=float, default=10, help="scrape this long before querying")
    parser.add_argument("--rate-interval", default="10s")
    parser.add_argument("--allow-empty", action="store_true", help="only require that queries evaluate")
    args = parser.parse_args()
    targets = [tuple(t.split("=", 1)) for t in args.target]
    prometheus = Prometheus(targets)
    try:
        print(f"prometheus on 127.0.0.1:{prometheus.port}, scraping {targets}")
        prometheus.wait_for_targets()
        time.sleep(args.settle_seconds)
        problems = check_queries(prometheus, dashboard_queries(args.dashboard), args.rate_interval, not args.allow_empty)
    finally:
        prometheus.stop()
    for title, expr, problem in problems:
        print(f"FAIL {title}: {problem}: {expr}")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
