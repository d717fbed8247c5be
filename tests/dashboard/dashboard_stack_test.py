#!/usr/bin/env python3
"""Live dashboard check on the real stack (ctest dashboard_live, label "dashboard").

Starts 2 expert-svc shards, attention-svc and router-svc on loopback (models/prose), each with
--metrics-listen; a real Prometheus (Debian `prometheus`, 1 s scrapes, prometheus_harness.py)
scrapes all four. With the blends admin API (router-svc/admin_main.cc in the source), the parent
`code` is loaded on the shards, the blend `mix` = 0.5 prose + 0.5 code built and the A/B split set
to prose=1 mix=1 through expertmesh-admin, and during the load `mix` is rebuilt (0.7/0.3, version 2:
a live swap; a name's first build is invisible to rate(), its series starting at 1).
expertmesh-loadtest drives two closed-loop runs at once (one naming no blend; one with A/B keys,
or naming `prose` without the admin API) plus requests for an unknown blend (errors). While the
load runs, EVERY query of every panel of deploy/grafana/expertmesh-dashboard.json is evaluated through Prometheus's HTTP
API and must return data. Afterwards the services' own /metrics are checked against what the
load tester saw: requests and tokens per blend at the router, sequences per step phase at the
attention tier, the expert shards' per-expert token-slots against the independent count
(MoE layers x top-k x tokens that went through the model), and the blend gauges and swaps.
"""
import argparse
import json
import math
import os
import re
import secrets
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import prometheus_harness  # noqa: E402

# Without the blends admin API: queries that cannot return data, by a metric they use, with the
# reason (the test fails when one does return data: the list cannot go stale), and queries
# allowed to answer only NaN (series exist, nothing happened in the rate window). With the admin
# API both are empty: every query must return values.
PENDING_WITHOUT_BLENDS = {
    "expertmesh_ab_split_weight": "router-svc has no A/B split without the blends admin API",
}
NAN_ALLOWED_WITHOUT_BLENDS = {
    "expertmesh_blend_swap_duration_seconds_bucket":
        "no weight-set swap in the window: the only load of a weight set is at start-up",
}
PENDING, NAN_ALLOWED = {}, {}


def fail(message):
    print(f"FAIL {message}")
    sys.exit(1)


def classify(answer):
    """'error', 'empty', 'nan' (every value NaN/Inf) or 'data'."""
    if answer.get("status") != "success":
        return "error"
    result = answer["data"]["result"]
    if not result:
        return "empty"
    values = [float(sample["value"][1]) for sample in result]
    return "data" if any(math.isfinite(v) for v in values) else "nan"


def evaluate_dashboard(prometheus, queries, rate_interval, retry_seconds):
    """Evaluates every query (retrying empty and NaN answers a while); returns problems and counts."""
    problems, outcome = [], {}
    deadline = time.time() + retry_seconds
    for title, expr in queries:
        concrete = prometheus_harness.substitute_variables(expr, rate_interval)
        pending = next((reason for metric, reason in PENDING.items() if metric in expr), None)
        nan_reason = next((reason for metric, reason in NAN_ALLOWED.items() if metric in expr), None)
        while True:
            answer = prometheus.query(concrete)
            kind = classify(answer)
            if kind in ("data", "error") or time.time() > deadline or (pending and kind == "empty"):
                break
            if nan_reason and kind == "nan":
                break
            time.sleep(1)
        outcome[(title, expr)] = kind
        series = len(answer.get("data", {}).get("result", []))
        if kind == "error":
            problems.append(f"{title}: query error {answer.get('error')}: {concrete}")
        elif pending:
            if kind == "empty":
                print(f"pend [0 series] {title}: {concrete}  ({pending})")
            else:
                problems.append(f"{title}: returns data now; remove it from PENDING: {concrete}")
        elif kind == "empty":
            problems.append(f"{title}: no data: {concrete}")
        elif kind == "nan" and not nan_reason:
            problems.append(f"{title}: only NaN values: {concrete}")
        else:
            note = f"  (NaN: {nan_reason})" if kind == "nan" else ""
            print(f"ok   [{series} series] {title}: {concrete}{note}")
    return problems, outcome


def scrape(address):
    """{(name, frozenset(labels)): value} of one /metrics endpoint."""
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as response:
        text = response.read().decode()
    samples = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = re.match(r"([a-zA-Z_:][\w:]*)(\{(.*)\})?\s+(\S+)", line)
        if not match:
            continue
        labels = frozenset(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match.group(3) or ""))
        samples[(match.group(1), labels)] = float(match.group(4))
    return samples


def total(samples, name, **labels):
    wanted = set(labels.items())
    return sum(v for (n, l), v in samples.items() if n == name and wanted <= set(l))


def moe_layers(model):
    config = json.loads((model / "config.json").read_text())
    first_dense = config.get("first_k_dense_replace", 0)
    frequency = config.get("moe_layer_freq", 1)
    layers = [i for i in range(config["num_hidden_layers"]) if i >= first_dense and i % frequency == 0]
    return layers, config["num_experts_per_tok"]


def read_csv(path):
    lines = path.read_text().splitlines()
    header = lines[0].split(",")
    return [dict(zip(header, line.split(","))) for line in lines[1:] if line]


def check_consistency(stack, model, runs, unknown_blend_requests, blends):
    """The services' own counters against what the load tester saw."""
    problems = []
    router = scrape(stack.service("router").metrics_address)
    attention = scrape(stack.service("attention").metrics_address)
    experts = [scrape(svc.metrics_address) for svc in stack.services if svc.job == "expert"]
    all_requests = []
    by_label = {}
    for run_label, csv_path in runs:
        requests = read_csv(csv_path)
        all_requests += requests
        ok = [r for r in requests if r["code"] == "OK"]
        if len(ok) != len(requests) or not requests:
            problems.append(f"load run '{run_label}': {len(requests) - len(ok)} of {len(requests)} requests failed")
        for request in requests:
            # The router labels a request with the blend it chose: with the blends admin API that is
            # always a weight set (explicit, the split's choice or the catalog's default), the one the
            # usage event reports; without it "default" when the request named none.
            label = "default" if run_label == "default" and not blends else request["blend"]
            by_label.setdefault(label, []).append(request)
    if blends and not {"prose", "mix"} <= set(by_label):
        problems.append(f"the A/B split did not send requests to both prose and mix: {sorted(by_label)}")
    for blend_label, requests in sorted(by_label.items()):
        for what, metric, expected in [
                ("requests", "expertmesh_requests_total", len(requests)),
                ("generated tokens", "expertmesh_generation_tokens_total", sum(int(r["generated_tokens"]) for r in requests)),
                ("prompt tokens", "expertmesh_prompt_tokens_total", sum(int(r["prompt_tokens"]) for r in requests))]:
            counted = total(router, metric, blend=blend_label)
            print(f"     router {what} (blend={blend_label}): {counted:.0f}, load tester: {expected}")
            if counted != expected:
                problems.append(f"router {metric}{{blend={blend_label}}} = {counted}, the load tester saw {expected}")
    # Without the admin API an unknown blend fails at the expert tier (a request that ran, counted
    # as an error under "other"); with it the router's catalog refuses it before admission (only
    # the gRPC metrics count it).
    errors = total(router, "expertmesh_requests_total", blend="other", finish_reason="error")
    expected_errors = 0 if blends else unknown_blend_requests
    print(f"     router requests ended in error (unknown blend): {errors:.0f}, expected {expected_errors}")
    if errors != expected_errors:
        problems.append(f"router counted {errors} unknown-blend errors, expected {expected_errors}")
    not_found = total(router, "grpc_server_handled_total", grpc_method="Generate", grpc_code="NotFound")
    if not_found != unknown_blend_requests:
        problems.append(f"grpc_server_handled_total{{grpc_code=NotFound}} = {not_found}, expected {unknown_blend_requests}")

    # Tokens through the model: each prompt once (prefill), then every generated token but the last.
    forwarded = sum(int(r["prompt_tokens"]) + int(r["generated_tokens"]) - 1 for r in all_requests)
    prefill_sequences = total(attention, "expertmesh_step_batch_size_sum", phase="prefill")
    decode_sequences = total(attention, "expertmesh_step_batch_size_sum", phase="decode")
    expected_decode = sum(int(r["generated_tokens"]) - 1 for r in all_requests)
    print(f"     attention sequences in prefill steps: {prefill_sequences:.0f} (requests {len(all_requests)}), "
          f"in decode steps: {decode_sequences:.0f} (expected {expected_decode})")
    if prefill_sequences != len(all_requests) or decode_sequences != expected_decode:
        problems.append("attention step batch sizes do not match the requests served")
    if blends:
        split = {blend: total(router, "expertmesh_ab_split_weight", blend=blend) for blend in ("prose", "mix")}
        print(f"     router A/B split weights: {split}")
        if split != {"prose": 0.5, "mix": 0.5}:
            problems.append(f"expertmesh_ab_split_weight is {split}, the split set is prose=1 mix=1")
        for index, shard in enumerate(experts):
            swaps = {blend: total(shard, "expertmesh_blend_swaps_total", blend=blend, result="success")
                     for blend in ("prose", "code", "mix")}
            versions = {blend: total(shard, "expertmesh_blend_version", blend=blend) for blend in ("prose", "code", "mix")}
            memory = {blend: total(shard, "expertmesh_blend_weight_bytes", blend=blend) for blend in ("prose", "code", "mix")}
            print(f"     expert shard {index}: successful builds {swaps}, versions {versions}, weight-set bytes {memory}")
            if swaps != {"prose": 1, "code": 1, "mix": 2} or versions != {"prose": 1, "code": 1, "mix": 2} or \
                    min(memory.values()) <= 0:
                problems.append(f"expert shard {index}: builds {swaps}, versions {versions}, weight bytes {memory}: "
                                "expected prose and code once (v1), mix twice (v2)")
    layers, top_k = moe_layers(model)
    slots = sum(total(e, "expertmesh_moe_expert_tokens_total") for e in experts)
    expected_slots = forwarded * len(layers) * top_k
    print(f"     expert token-slots over {len(experts)} shards: {slots:.0f}; {forwarded} tokens x "
          f"{len(layers)} MoE layers x top-{top_k} = {expected_slots}")
    if slots != expected_slots:
        problems.append(f"expert shards counted {slots} token-slots, expected {expected_slots}")
    if any(total(e, "expertmesh_moe_expert_tokens_total") == 0 for e in experts):
        problems.append("an expert shard counted no token-slots")
    for shard in range(len(experts)):
        if total(attention, "expertmesh_moe_fanout_seconds_count", shard=str(shard)) == 0:
            problems.append(f"attention recorded no round trip to shard {shard}")
    return problems


def run(source, binary_dir, model, keep_logs):
    sys.path.insert(0, str(source / "loadtest/scenarios"))
    import expertmesh_stack  # noqa: E402

    global PENDING, NAN_ALLOWED
    bin_dir = binary_dir / "bin"
    # The blends admin API is part of the source: then it is required, and every query must answer.
    blends = (source / "router-svc/admin_main.cc").exists()
    if not blends:
        PENDING, NAN_ALLOWED = PENDING_WITHOUT_BLENDS, NAN_ALLOWED_WITHOUT_BLENDS
    for binary in ("expertmesh-loadtest", "expertmesh-client") + (("expertmesh-admin",) if blends else ()):
        if not (bin_dir / binary).exists():
            fail(f"{bin_dir / binary} not built")
    queries = prometheus_harness.dashboard_queries(source / "deploy/grafana/expertmesh-dashboard.json")
    work = Path(tempfile.mkdtemp(prefix="expertmesh-dashboard-"))
    started = time.time()
    problems = []
    prometheus = None
    load = []
    token_file = work / "admin-token"
    token_file.write_text(secrets.token_hex(24) + "\n")
    token_file.chmod(0o600)
    admin_flags = ["--admin-token-file", str(token_file)] if blends else []

    def admin(command):
        result = subprocess.run([str(bin_dir / "expertmesh-admin"), "--target", stack.router_address,
                                 "--token-file", str(token_file), "--progress=false", *command],
                                capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            raise RuntimeError(f"expertmesh-admin {' '.join(command)}: {result.stderr[-1000:]}")
    stack = expertmesh_stack.Stack(bin_dir, model, work, shards=2, expert_flags=admin_flags, router_flags=admin_flags)
    try:
        print("== stack: expert-svc x2, attention-svc, router-svc with --metrics-listen")
        stack.start()
        prometheus = prometheus_harness.Prometheus(stack.metrics_targets())
        print(f"== prometheus on 127.0.0.1:{prometheus.port} scraping {len(stack.services)} services every 1 s")
        prometheus.wait_for_targets()
        time.sleep(1.5)  # a scrape before the blends are built, so their swaps are increases
        if blends:
            for command in (["load-parent", "code", str(model.parent / "code")],
                            ["create-blend", "mix", "--lambdas", "prose=0.5,code=0.5", "--base", "prose"],
                            ["set-split", "prose=1", "mix=1"]):
                admin(command)
            print("== blends: parent code loaded, blend mix = 0.5 prose + 0.5 code built, A/B split prose=1 mix=1")
        common = ["--target", stack.router_address, "--concurrency", "2", "--duration", "14s",
                  "--prompt-tokens", "uniform:4:24", "--max-tokens", "uniform:2:16", "--quiet"]
        second = "ab" if blends else "prose"
        runs = [("default", work / "default.csv"), (second, work / f"{second}.csv")]
        for label, csv_path in runs:
            blend = {"default": [], "ab": ["--ab-keys", "50"], "prose": ["--blend-mix", "prose=1"]}[label]
            load.append(subprocess.Popen([str(bin_dir / "expertmesh-loadtest"), *common, *blend, "--csv", str(csv_path),
                                          "--text", str(work / f"{label}.txt"), "--random-seed", str(len(load) + 1)],
                                         stdout=subprocess.DEVNULL, stderr=open(work / f"load-{label}.log", "w")))
        print(f"== load: 2 closed-loop runs (no blend; {'A/B keys' if blends else 'blend prose'}), 2 in flight each, 14 s")
        if blends:
            time.sleep(2)
            admin(["create-blend", "mix", "--lambdas", "prose=0.7,code=0.3", "--base", "prose"])
            print("== blends: mix rebuilt under load (0.7 prose + 0.3 code, version 2)")
        unknown = 3
        for _ in range(unknown):
            result = subprocess.run([str(bin_dir / "expertmesh-client"), "--router", stack.router_address,
                                     "--ids", "5,6,7", "--max-tokens", "2", "--blend", "no-such-blend"],
                                    capture_output=True, text=True)
            if result.returncode == 0 or "NOT_FOUND" not in (result.stdout + result.stderr).upper().replace(" ", "_"):
                problems.append(f"unknown blend did not fail NOT_FOUND: {result.stdout}{result.stderr}")
        time.sleep(6)  # several scrapes under load, so rate() has points
        print(f"== {len(queries)} dashboard queries through Prometheus's HTTP API")
        # 30 s covers the whole run, the blend's build before the load included.
        query_problems, outcome = evaluate_dashboard(prometheus, queries, rate_interval="30s", retry_seconds=12)
        problems += query_problems
        for process in load:
            process.wait(timeout=90)
        time.sleep(0.5)
        print("== the services' counters against the load tester's")
        problems += check_consistency(stack, model, runs, unknown, blends)
        counts = {kind: sum(1 for k in outcome.values() if k == kind) for kind in ("data", "nan", "empty", "error")}
        panels = {}
        for (title, _), kind in outcome.items():
            panels.setdefault(title, []).append(kind)
        full = sum(1 for kinds in panels.values() if all(k == "data" for k in kinds))
        print(f"== {len(queries)} queries: {counts['data']} with values, {counts['nan']} NaN only, "
              f"{counts['empty']} empty, {counts['error']} errors; {full} of {len(panels)} panels have values "
              f"in every query ({time.time() - started:.0f} s)")
    except Exception as error:  # noqa: BLE001 - report with the logs
        problems.append(f"{type(error).__name__}: {error}")
    finally:
        for process in load:
            if process.poll() is None:
                process.kill()
                process.wait()
        if prometheus:
            prometheus.stop()
        stack.stop()
    if problems:
        stack.dump_logs()
        for problem in problems:
            print(f"FAIL {problem}")
        print(f"(work directory kept: {work})")
        sys.exit(1)
    if not keep_logs:
        import shutil
        shutil.rmtree(work, ignore_errors=True)
    print("PASS")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", type=Path, default=Path(os.environ.get("EXPERTMESH_SOURCE_DIR", ".")))
    parser.add_argument("--binary-dir", type=Path, default=Path(os.environ.get("EXPERTMESH_BINARY_DIR", "build")))
    parser.add_argument("--model", type=Path, default=None, help="checkpoint directory (default models/prose)")
    parser.add_argument("--keep-logs", action="store_true")
    args = parser.parse_args()
    source = args.source.resolve()
    run(source, args.binary_dir.resolve(), (args.model or source / "models/prose").resolve(), args.keep_logs)


if __name__ == "__main__":
    main()
