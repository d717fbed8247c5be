#!/usr/bin/env python3
"""Multi-host test on one machine (ctest netns_multihost, label integration).

Every service runs in its own network namespace with its own address (netns_topology.py: veth
links to a bridge): expert-svc shard 0 with two replicas (e00, e01), shard 1 with one (e10),
attention-svc reaching the shards by address, router-svc, and a client namespace that runs
expertmesh-loadtest / expertmesh-client. Then:

  A. baseline: requests through the router succeed;
  B. cut e01's link (packets vanish, no RST): requests end OK or cleanly (UNAVAILABLE /
     DEADLINE_EXCEEDED) within their deadline, never hang; once attention-svc has noticed the
     dead link, shard 0's traffic is on e00 alone and every request succeeds; attention-svc
     stays SERVING;
  C. cut e10 too (shard 1's only replica): requests fail cleanly within their deadline, and
     attention-svc turns NOT_SERVING;
  D. restore both links: attention-svc SERVING again and every request succeeds.

Needs root and iproute2; prints SKIP and exits 77 (ctest SKIP_RETURN_CODE) when namespaces cannot
be created. Namespaces and processes are removed at the end, also on failure or a signal.
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import netns_topology  # noqa: E402

SKIP = 77
REQUEST_TIMEOUT = 8.0    # seconds, each request's deadline
STEP_TIMEOUT_MS = 3000   # attention-svc's bound on one step's expert round trips
CLEAN_FAILURES = {"DeadlineExceeded", "Unavailable"}


class Failure(Exception):
    pass


def read_csv(path):
    lines = Path(path).read_text().splitlines()
    header = lines[0].split(",")
    return [dict(zip(header, line.split(","))) for line in lines[1:] if line]


class Client:
    """Runs expertmesh-loadtest and expertmesh-client inside the client namespace."""

    def __init__(self, topology, bin_dir, router_address, work):
        self.prefix = topology.prefix("client")
        self.bin_dir, self.router, self.work = bin_dir, router_address, work
        self.router_host = router_address.rsplit(":", 1)[0]
        self.batches = 0

    def batch(self, requests=4):
        """`requests` requests, 2 in flight; returns the per-request rows and the wall time."""
        self.batches += 1
        csv_path = self.work / f"batch-{self.batches}.csv"
        started = time.time()
        result = subprocess.run(
            self.prefix + [str(self.bin_dir / "expertmesh-loadtest"), "--target", self.router,
                           "--allow-hosts", self.router_host, "--requests", str(requests), "--concurrency", "2",
                           "--timeout", f"{REQUEST_TIMEOUT:g}s", "--drain-timeout", f"{REQUEST_TIMEOUT + 5:g}s",
                           "--prompt-tokens", "8", "--max-tokens", "6", "--random-seed", str(self.batches),
                           "--quiet", "--csv", str(csv_path), "--text", str(self.work / f"batch-{self.batches}.txt")],
            capture_output=True, text=True, timeout=3 * REQUEST_TIMEOUT + 30)
        elapsed = time.time() - started
        if result.returncode not in (0, 1) or not csv_path.exists():
            raise Failure(f"expertmesh-loadtest failed (exit {result.returncode}): {result.stderr[-2000:]}")
        rows = read_csv(csv_path)
        if len(rows) != requests:
            raise Failure(f"expertmesh-loadtest reported {len(rows)} of {requests} requests")
        return rows, elapsed

    def metric(self, metrics_address, name, **labels):
        """Sum of the samples of `name` with `labels` on a /metrics endpoint, read from this namespace."""
        script = ("import sys, urllib.request\n"
                  "text = urllib.request.urlopen(f'http://{sys.argv[1]}/metrics', timeout=5).read().decode()\n"
                  "print(text)")
        result = subprocess.run(self.prefix + [sys.executable, "-c", script, metrics_address],
                                capture_output=True, text=True, timeout=30)
        if result.returncode != 0:
            raise Failure(f"cannot scrape {metrics_address}: {result.stderr[-500:]}")
        total = 0.0
        for line in result.stdout.splitlines():
            if line.startswith(name + "{") or line.startswith(name + " "):
                if all(f'{key}="{value}"' in line for key, value in labels.items()):
                    total += float(line.rsplit(" ", 1)[1])
        return total

    def health(self, address, service):
        probe = subprocess.run(self.prefix + [str(self.bin_dir / "expertmesh-client"), "--health", address,
                                              "--health-service", service, "--wait-seconds", "1"],
                               capture_output=True, text=True)
        return probe.returncode == 0


def check_bounded(rows, phase):
    """No hang: every request ended within its deadline (+1 s), and failures are clean ones."""
    for row in rows:
        if float(row["end_to_end_seconds"]) > REQUEST_TIMEOUT + 1.0:
            raise Failure(f"{phase}: a request took {row['end_to_end_seconds']} s, beyond its {REQUEST_TIMEOUT} s deadline")
        if row["code"] != "OK" and row["code"] not in CLEAN_FAILURES:
            raise Failure(f"{phase}: a request failed with {row['code']} (expected {sorted(CLEAN_FAILURES)})")


def codes(rows):
    summary = {}
    for row in rows:
        summary[row["code"]] = summary.get(row["code"], 0) + 1
    return ", ".join(f"{code} x{count}" for code, count in sorted(summary.items()))


def until(what, condition, timeout):
    """Polls `condition` (returns truthy when met) until `timeout` s; returns the seconds taken."""
    started = time.time()
    while time.time() - started < timeout:
        if condition():
            return time.time() - started
        time.sleep(0.2)
    raise Failure(f"{what} not within {timeout} s")


def scenario(topology, stack, client):
    attention = stack.service("attention").address
    attention_service = "expertmesh.v1.AttentionService"

    rows, elapsed = client.batch(6)
    check_bounded(rows, "A")
    if any(row["code"] != "OK" for row in rows):
        raise Failure(f"A: baseline requests failed: {codes(rows)}")
    print(f"A  baseline across namespaces: {codes(rows)} in {elapsed:.1f} s")

    topology.cut("e01")
    cut_at = time.time()
    print("B  cut e01 (shard 0, replica 1): link down on the bridge")
    seen = []

    def clean_batch():
        rows, _ = client.batch(4)
        check_bounded(rows, "B")
        seen.extend(rows)
        return all(row["code"] == "OK" for row in rows)
    # The first batch after the cut may fail (requests that were on e01); the fan-out must move
    # shard 0's traffic to e00 once the dead link is noticed (keepalive), then all succeed.
    took = until("B: shard 0's traffic on its remaining replica (a fully successful batch)", clean_batch, 60)
    rows, _ = client.batch(6)
    check_bounded(rows, "B")
    if any(row["code"] != "OK" for row in rows):
        raise Failure(f"B: after failover requests still fail: {codes(rows)}")
    if not client.health(attention, attention_service):
        raise Failure("B: attention-svc is not SERVING although shard 0 has a live replica")
    # expert-0-1 is the second address in attention-svc's --expert-shards: shard label "1".
    failovers = client.metric(stack.service("attention").metrics_address, "expertmesh_moe_shard_failovers_total",
                              shard="1")
    if failovers < 1:
        raise Failure(f"B: attention-svc's metrics count {failovers} failovers away from e01 (shard=\"1\")")
    print(f"   {len(seen)} requests while failing over ({codes(seen)}), all bounded by the deadline; "
          f"failover complete {time.time() - cut_at:.1f} s after the cut ({took:.1f} s of batches); "
          f"6 more requests OK; attention-svc SERVING, its metrics count {failovers:.0f} failover away from e01")

    topology.cut("e10")
    cut_at = time.time()
    print("C  cut e10 (shard 1, its only replica)")
    failed = []

    def failing_cleanly():
        rows, _ = client.batch(2)
        check_bounded(rows, "C")
        failed.extend(rows)
        return not client.health(attention, attention_service) and all(row["code"] != "OK" for row in rows)
    until("C: attention-svc NOT_SERVING and requests failing", failing_cleanly, 60)
    fast, _ = client.batch(2)
    check_bounded(fast, "C")
    print(f"   {len(failed)} requests, {codes(failed)}, each within its {REQUEST_TIMEOUT:g} s deadline; "
          f"attention-svc NOT_SERVING {time.time() - cut_at:.1f} s after the cut; then {codes(fast)} in "
          f"{max(float(r['end_to_end_seconds']) for r in fast):.2f} s at most")

    topology.restore("e01")
    topology.restore("e10")
    restored_at = time.time()
    print("D  links restored")
    until("D: attention-svc SERVING again", lambda: client.health(attention, attention_service), 60)

    def all_ok():
        rows, _ = client.batch(4)
        check_bounded(rows, "D")
        return all(row["code"] == "OK" for row in rows)
    until("D: requests succeed again", all_ok, 30)
    rows, _ = client.batch(8)
    if any(row["code"] != "OK" for row in rows):
        raise Failure(f"D: after recovery requests fail: {codes(rows)}")
    print(f"   recovered {time.time() - restored_at:.1f} s after the restore: 8 more requests {codes(rows)}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", type=Path, default=Path(os.environ.get("EXPERTMESH_SOURCE_DIR", ".")))
    parser.add_argument("--binary-dir", type=Path, default=Path(os.environ.get("EXPERTMESH_BINARY_DIR", "build")))
    parser.add_argument("--model", type=Path, default=None)
    args = parser.parse_args()
    source = args.source.resolve()
    bin_dir = args.binary_dir.resolve() / "bin"
    model = (args.model or source / "models/prose").resolve()
    try:
        netns_topology.probe()
        netns_topology.cleanup_stale()
    except netns_topology.NetnsUnavailable as reason:
        print(f"SKIP: network namespaces are not available: {reason}")
        sys.exit(SKIP)
    sys.path.insert(0, str(source / "loadtest/scenarios"))
    import expertmesh_stack  # noqa: E402
    for binary in ("expert-svc", "attention-svc", "router-svc", "expertmesh-client", "expertmesh-loadtest"):
        if not (bin_dir / binary).exists():
            print(f"FAIL {bin_dir / binary} is not built")
            sys.exit(1)

    work = Path(tempfile.mkdtemp(prefix="expertmesh-netns-"))
    hosts = {"expert-0-0": "e00", "expert-0-1": "e01", "expert-1-0": "e10", "attention": "attention",
             "router": "router"}
    stack = None
    try:
        with netns_topology.Topology(list(hosts.values()) + ["client"]) as topology:
            print("== namespaces: " + ", ".join(f"{h}={topology.addresses[h]}" for h in topology.addresses))
            stack = expertmesh_stack.Stack(
                bin_dir, model, work, shards=2, replicas=[2, 1],
                hosts={name: topology.addresses[host] for name, host in hosts.items()},
                prefixes={name: topology.prefix(host) for name, host in hosts.items()},
                attention_flags=["--step-timeout-ms", str(STEP_TIMEOUT_MS)])
            try:
                stack.start()
                scenario(topology, stack, Client(topology, bin_dir, stack.router_address, work))
            finally:
                stack.stop()
    except (Failure, expertmesh_stack.StackError) as error:
        print(f"FAIL {error}")
        if stack:
            stack.dump_logs(30)
        print(f"(work directory kept: {work})")
        sys.exit(1)
    print("PASS")


if __name__ == "__main__":
    main()
