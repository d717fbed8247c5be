#!/usr/bin/env python3
"""Load-test scenarios against the real stack on loopback (docs/loadtest.md, "Scenarios").

    loadtest/scenarios/run_scenario.py steady     [--duration 60] [--concurrency 4]
    loadtest/scenarios/run_scenario.py shard-kill [--kill-at 20]
    loadtest/scenarios/run_scenario.py blend-swap [--swap-at 20]

Each starts the services (expertmesh_stack.py, models/prose by default), runs
expertmesh-loadtest, acts on the stack at a given second (kill -9 of one of two replicas of
shard 0; building a blend and moving the A/B split to it through expertmesh-admin), scrapes every
service's /metrics at the end and writes into --out (default docs/loadtest/SCENARIO):
report.txt and report.json (expertmesh-loadtest), latency.png (its plot, with the scenario's
events marked) and summary.md (setup, events, the load tester's numbers and the services'
counters). Every process it starts is stopped at the end, also on failure.
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import expertmesh_stack  # noqa: E402
import scenario_events  # noqa: E402


def scrape(address):
    """{(name, frozenset(labels)): value} of one /metrics endpoint."""
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as response:
        text = response.read().decode()
    samples = {}
    for line in text.splitlines():
        match = re.match(r"([a-zA-Z_:][\w:]*)(\{(.*)\})?\s+(\S+)", line)
        if line.startswith("#") or not match:
            continue
        labels = frozenset(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match.group(3) or ""))
        samples[(match.group(1), labels)] = float(match.group(4))
    return samples


def total(samples, name, **labels):
    wanted = set(labels.items())
    return sum(v for (n, l), v in samples.items() if n == name and wanted <= set(l))


def label_values(samples, name, label):
    return sorted({dict(l)[label] for (n, l) in samples if n == name and label in dict(l)})


def histogram_quantile(samples, name, quantile, **labels):
    """Quantile from cumulative buckets (linear within a bucket, as Prometheus does)."""
    wanted = set(labels.items())
    buckets = {}
    for (n, l), v in samples.items():
        if n == f"{name}_bucket" and wanted <= set(l):
            le = dict(l)["le"]
            bound = float("inf") if le == "+Inf" else float(le)
            buckets[bound] = buckets.get(bound, 0) + v
    if not buckets or buckets.get(float("inf"), 0) == 0:
        return None
    bounds = sorted(buckets)
    rank = quantile * buckets[float("inf")]
    previous_bound, previous_count = 0.0, 0.0
    for bound in bounds:
        if buckets[bound] >= rank:
            if bound == float("inf"):
                return previous_bound
            width = buckets[bound] - previous_count
            return previous_bound + (bound - previous_bound) * ((rank - previous_count) / width if width else 1)
        previous_bound, previous_count = bound, buckets[bound]
    return None


def metrics_summary(stack):
    """Markdown lines: what the services counted during the run."""
    router = scrape(stack.service("router").metrics_address)
    attention = scrape(stack.service("attention").metrics_address)
    lines = ["| service-side metric | value |", "| --- | --- |"]
    for blend in label_values(router, "expertmesh_requests_total", "blend"):
        for finish in label_values(router, "expertmesh_requests_total", "finish_reason"):
            count = total(router, "expertmesh_requests_total", blend=blend, finish_reason=finish)
            if count:
                lines.append(f"| router: requests blend={blend} finish={finish} | {count:.0f} |")
    for what, name in [("TTFT p50", "expertmesh_time_to_first_token_seconds"),
                       ("TTFT p90", "expertmesh_time_to_first_token_seconds"),
                       ("TPOT p50", "expertmesh_time_per_output_token_seconds")]:
        value = histogram_quantile(router, name, 0.9 if "p90" in what else 0.5)
        if value is not None:
            lines.append(f"| router: {what} (from histogram buckets) | {value * 1000:.0f} ms |")
    lines.append(f"| router: attention failovers | {total(router, 'expertmesh_attention_failovers_total'):.0f} |")
    split = {blend: total(router, "expertmesh_ab_split_weight", blend=blend)
             for blend in label_values(router, "expertmesh_ab_split_weight", "blend")}
    if split:
        lines.append("| router: A/B split weights at the end | " +
                     ", ".join(f"{blend} {weight:.2f}" for blend, weight in split.items()) + " |")
    for shard in label_values(attention, "expertmesh_moe_fanout_seconds_count", "shard"):
        trips = total(attention, "expertmesh_moe_fanout_seconds_count", shard=shard)
        if not shard.isdigit() and trips == 0:
            continue  # the catch-all series of shard indices outside the placement
        p50 = histogram_quantile(attention, "expertmesh_moe_fanout_seconds", 0.5, shard=shard)
        failovers = total(attention, "expertmesh_moe_shard_failovers_total", shard=shard)
        address = stack.service("attention").command[stack.service("attention").command.index("--expert-shards") + 1]
        name = address.split(",")[int(shard)] if shard.isdigit() and int(shard) < len(address.split(",")) else shard
        lines.append(f"| attention: shard {shard} ({name}) round trips / p50 / failovers away | "
                     f"{trips:.0f} / {'-' if p50 is None else f'{p50 * 1000:.2f} ms'} / {failovers:.0f} |")
    prefill = total(attention, "expertmesh_step_batch_size_count", phase="prefill")
    decode = total(attention, "expertmesh_step_batch_size_count", phase="decode")
    if decode:
        mean = total(attention, "expertmesh_step_batch_size_sum", phase="decode") / decode
        lines.append(f"| attention: steps with prefills / decode steps / mean decode batch | "
                     f"{prefill:.0f} / {decode:.0f} / {mean:.2f} sequences |")
    per_expert = {}
    for svc in stack.services:
        if svc.job != "expert" or not svc.alive():
            continue
        samples = scrape(svc.metrics_address)
        builds = []
        for blend in label_values(samples, "expertmesh_blend_swaps_total", "blend"):
            ok = total(samples, "expertmesh_blend_swaps_total", blend=blend, result="success")
            failed = total(samples, "expertmesh_blend_swaps_total", blend=blend, result="failure")
            version = total(samples, "expertmesh_blend_version", blend=blend)
            seconds = total(samples, "expertmesh_blend_swap_duration_seconds_sum", blend=blend)
            builds.append(f"{blend} v{version:.0f}: {ok:.0f} built ({seconds:.2f} s), {failed:.0f} failed")
        if builds:
            lines.append(f"| {svc.name}: weight sets | {'; '.join(builds)} |")
        for (n, l), v in samples.items():
            if n == "expertmesh_moe_expert_tokens_total":
                key = (int(dict(l)["layer"]), int(dict(l)["expert"]))
                per_expert[key] = per_expert.get(key, 0) + v
    for layer in sorted({layer for layer, _ in per_expert}):
        counts = [per_expert[(l, e)] for (l, e) in sorted(per_expert) if l == layer]
        if sum(counts):
            lines.append(f"| expert shards (live ones): layer {layer} token-slots per expert (max/mean "
                         f"{max(counts) / (sum(counts) / len(counts)):.2f}) | {' '.join(f'{c:.0f}' for c in counts)} |")
    return lines


def percentiles(stats, scale, digits):
    """'p50 / p90 / p99' of a latency summary of the JSON report, times `scale`."""
    return " / ".join(f"{stats[q] * scale:.{digits}f}" for q in ("p50", "p90", "p99"))


def event_marks(events, top):
    """gnuplot commands: a dashed vertical line per event and a short label (text before the first
    '(' or ','), staggered downwards from `top` so labels of close events do not overlap."""
    marks = ""
    for index, (t, label) in enumerate(events):
        short = re.split(r"[(,]", label)[0].strip().replace("'", "''")
        marks += (f"set arrow from {t:.2f}, graph 0 to {t:.2f}, graph 1 nohead lc rgb 'red' dt 2 lw 2\n"
                  f"set label '{short}' at {t:.2f}, graph {top - 0.07 * (index % 3):.2f} left offset 0.5,0 "
                  "tc rgb 'red'\n")
    return marks


def mark_events(work, png, events, out_png):
    """Re-draws the load tester's plot with a vertical line per (second, label) event."""
    script_path = Path(f"{png}.gp")  # expertmesh-loadtest keeps its gnuplot script next to the PNG
    if not events or not script_path.exists():
        shutil.copy(png, out_png)
        return
    script = re.sub(r"^set output .*$", lambda _: f"set output '{out_png}'", script_path.read_text(), count=1,
                    flags=re.M)
    marks = event_marks(events, 0.93)
    script = re.sub(r"(set multiplot[^\n]*\n)", lambda m: m.group(1) + marks, script, count=1)
    marked = work / "marked.gp"
    marked.write_text(script)
    subprocess.run(["gnuplot", str(marked)], check=True, capture_output=True)


def plot_blends(work, events, out_png):
    """requests/s started per blend (from the load tester's CSV), with the events marked; only when
    more than one blend served. Returns whether it drew."""
    lines = (work / "requests.csv").read_text().splitlines()
    header = lines[0].split(",")
    rows = [dict(zip(header, line.split(","))) for line in lines[1:] if line]
    blends = sorted({f"{r['blend']} v{r['blend_version']}" for r in rows if r["code"] == "OK" and r["blend"]})
    if len(blends) < 2:
        return False
    seconds = int(max(float(r["start_seconds"]) for r in rows)) + 1
    counts = {blend: [0] * seconds for blend in blends}
    for r in rows:
        key = f"{r['blend']} v{r['blend_version']}"
        if key in counts:
            counts[key][int(float(r["start_seconds"]))] += 1
    data = work / "blends.dat"
    data.write_text("".join(f"{t} " + " ".join(str(counts[b][t]) for b in blends) + "\n" for t in range(seconds)))
    marks = event_marks(events, 0.95)
    plots = ", ".join(f"'{data}' using ($1 + 0.5):{i + 2} with histeps lw 2 title '{blend}'"
                      for i, blend in enumerate(blends))
    script = work / "blends.gp"
    script.write_text("set terminal pngcairo size 1200,450 noenhanced font 'sans,10'\n"
                      f"set output '{out_png}'\nset grid\nset key top left\nset yrange [0:*]\n"
                      "set title 'requests started per second, by the blend and version that served them'\n"
                      "set xlabel 'time (s)'\nset ylabel 'requests/s'\n" + marks + f"plot {plots}\n")
    subprocess.run(["gnuplot", str(script)], check=True, capture_output=True)
    return True


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenario", choices=sorted(scenario_events.SCENARIOS))
    parser.add_argument("--bin", type=Path, default=Path("build/bin"), help="directory of the built binaries")
    parser.add_argument("--model", type=Path, default=Path("models/prose"))
    parser.add_argument("--out", type=Path, default=None, help="report directory (default docs/loadtest/SCENARIO)")
    parser.add_argument("--duration", type=int, default=60, help="seconds of load")
    parser.add_argument("--concurrency", type=int, default=4, help="requests in flight (closed loop)")
    parser.add_argument("--prompt-tokens", default="uniform:16:64")
    parser.add_argument("--max-tokens", default="uniform:16:64")
    parser.add_argument("--event-at", type=float, default=20, help="second of the load at which the event happens")
    args = parser.parse_args()
    spec = scenario_events.SCENARIOS[args.scenario]
    out = (args.out or Path("docs/loadtest") / args.scenario).resolve()
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f"expertmesh-{args.scenario}-"))
    print(f"== {args.scenario}: {spec.description}\n   work directory {work}, reports to {out}")

    load_before = os.getloadavg()[0]
    stack = expertmesh_stack.Stack(args.bin, args.model, work, **spec.stack_options(work))
    failed = True
    try:
        stack.start()
        context = scenario_events.Context(stack=stack, bin_dir=Path(args.bin).resolve(), work=work, model=args.model)
        spec.prepare(context)
        load_command = [str(Path(args.bin).resolve() / "expertmesh-loadtest"), "--target", stack.router_address,
                        "--concurrency", str(args.concurrency), "--duration", f"{args.duration}s",
                        "--prompt-tokens", args.prompt_tokens, "--max-tokens", args.max_tokens,
                        "--json", str(out / "report.json"), "--text", str(out / "report.txt"),
                        "--csv", str(work / "requests.csv"), "--plot", str(work / "latency.png"),
                        *spec.load_flags]
        print("== load: " + " ".join(load_command[1:]))
        started = time.time()
        load = subprocess.Popen(load_command, stderr=open(work / "loadtest.log", "w"))
        events = []

        def act():
            # Each event at --event-at + its delay (after the previous one has finished).
            for delay, action in spec.events:
                time.sleep(max(0.0, args.event_at + delay - (time.time() - started)))
                if load.poll() is not None:
                    return
                at = time.time() - started
                context.notes.setdefault("event_at", at)
                try:
                    label = action(context)
                except Exception as error:  # noqa: BLE001 - recorded, and the scenario fails
                    label = f"FAILED: {error}"
                    context.notes["event_failed"] = label
                events.append((at, label))
                print(f"== {at:.1f} s: {label}")
        actor = threading.Thread(target=act)
        actor.start()
        code = load.wait()
        actor.join()
        if "event_failed" in context.notes:
            raise RuntimeError(f"a scenario event failed: {context.notes['event_failed']}")
        print(f"== expertmesh-loadtest exited {code}")
        mark_events(work, work / "latency.png", events, out / "latency.png")
        report = json.loads((out / "report.json").read_text())
        summary = [f"# Scenario `{args.scenario}`", "", spec.description, "",
                   f"Command: `loadtest/scenarios/run_scenario.py {args.scenario}` (duration {args.duration} s, "
                   f"concurrency {args.concurrency}, prompt tokens {args.prompt_tokens}, max tokens {args.max_tokens}, "
                   f"model {args.model}).", "",
                   "Stack: " + ", ".join(f"{svc.name} ({svc.address})" for svc in stack.services), "",
                   f"Machine: {os.cpu_count()} CPU cores shared by the load tester and every service; load "
                   f"average {load_before:.1f} before the run (other work on the machine included), "
                   f"{os.getloadavg()[0]:.1f} at the end.", ""]
        if events:
            summary += ["Events (seconds after the load started):", ""]
            summary += [f"- {t:.1f} s: {label}" for t, label in events] + [""]
        e2e = report["latency_seconds"]["end_to_end"]
        ttft = report["latency_seconds"]["time_to_first_token"]
        tpot = report["latency_seconds"]["time_per_output_token"]
        summary += ["| load tester | value |", "| --- | --- |",
                    f"| requests (succeeded / failed) | {report['count']} ({report['succeeded']} / {report['failed']}) |",
                    f"| requests/s | {report['requests_per_second']:.2f} |",
                    f"| generated tokens/s | {report['generated_tokens_per_second']:.1f} |",
                    f"| TTFT p50 / p90 / p99 | {percentiles(ttft, 1000, 0)} ms |",
                    f"| TPOT p50 / p90 / p99 | {percentiles(tpot, 1000, 1)} ms |",
                    f"| end-to-end p50 / p90 / p99 | {percentiles(e2e, 1, 2)} s |",
                    f"| status codes | {', '.join(f'{k} {v}' for k, v in report['status_codes'].items())} |", ""]
        summary += metrics_summary(stack) + [""]
        summary += spec.conclude(context, report) + ["", "![latency](latency.png)", ""]
        if plot_blends(work, events, out / "blends.png"):
            summary += ["![requests by blend](blends.png)", ""]
        (out / "summary.md").write_text("\n".join(summary))
        print("\n".join(summary))
        failed = False
    finally:
        stack.stop()
        if failed:
            stack.dump_logs()
            print(f"(work directory kept: {work})")
        else:
            shutil.rmtree(work, ignore_errors=True)
    sys.exit(0 if not failed else 1)


if __name__ == "__main__":
    main()
