#!/usr/bin/env python3
"""The scenarios run_scenario.py knows: how each sets the stack up, what it does during the load
(its event) and what it concludes from the result. Adding a scenario = adding a Scenario here."""
import secrets
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable


@dataclass
class Context:
    stack: object
    bin_dir: Path
    work: Path
    model: Path
    notes: dict = field(default_factory=dict)


@dataclass
class Scenario:
    description: str
    stack_options: Callable = lambda work: {"shards": 2}
    prepare: Callable = lambda context: None
    load_flags: list = field(default_factory=list)
    # (delay after --event-at in seconds, action): each action runs in turn (no earlier than its
    # time, after the previous one finished) and returns its label for the plot and summary.
    events: list = field(default_factory=list)
    conclude: Callable = lambda context, report: []


def read_requests(context):
    path = context.work / "requests.csv"
    lines = path.read_text().splitlines()
    header = lines[0].split(",")
    return [dict(zip(header, line.split(","))) for line in lines[1:] if line]


def before_after(context, seconds):
    """Lines comparing requests started before and after `seconds` (end-to-end p50, failures)."""
    rows = read_requests(context)
    lines = []
    for what, part in [("before", [r for r in rows if float(r["start_seconds"]) < seconds]),
                       ("after", [r for r in rows if float(r["start_seconds"]) >= seconds])]:
        ok = sorted(float(r["end_to_end_seconds"]) for r in part if r["code"] == "OK")
        failed = len(part) - len(ok)
        p50 = f"{ok[len(ok) // 2]:.2f} s" if ok else "-"
        lines.append(f"- requests started {what} the event: {len(part)}, failed {failed}, end-to-end p50 {p50}")
    return lines


# ---- steady -----------------------------------------------------------------------------------
def steady_conclude(context, report):
    ok = report["failed"] == 0
    return ["Result: " + ("every request succeeded." if ok else f"{report['failed']} requests failed "
                          f"({report['status_codes']}).")]


# ---- shard-kill -------------------------------------------------------------------------------
def kill_replica(context):
    context.stack.kill("expert-0-1", signal.SIGKILL)
    return "kill -9 expert-0-1"


def shard_kill_conclude(context, report):
    kill_second = context.notes.get("event_at", 0.0)
    lines = ["Shard 0 has two replicas (expert-0-0, expert-0-1); expert-0-1 is killed with SIGKILL "
             "mid-load. attention-svc fails its in-flight layer requests over to expert-0-0 and "
             "sends shard 0's later traffic there only."]
    lines += before_after(context, kill_second)
    lines.append("Result: " + ("no request failed." if report["failed"] == 0
                               else f"{report['failed']} requests failed ({report['status_codes']})."))
    return lines


# ---- blend-swap -------------------------------------------------------------------------------
# The bundled parents: the stack serves models/prose (weight set "prose"); "code" is loaded as a
# second parent through the router's admin API, then the blend "mix" = 0.5 prose + 0.5 code.
def admin(context, *args):
    """Runs expertmesh-admin against the router (the whole fleet); its output, or raises."""
    command = [str(context.bin_dir / "expertmesh-admin"), "--target", context.stack.router_address,
               "--token-file", str(context.notes["token_file"]), "--progress=false", *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        raise RuntimeError(f"expertmesh-admin {' '.join(args)}: {result.stderr.strip()[-800:]}")
    return result.stdout


def blend_swap_stack(work):
    token_file = work / "admin-token"
    token_file.write_text(secrets.token_hex(24) + "\n")
    token_file.chmod(0o600)
    flags = ["--admin-token-file", str(token_file)]
    return {"shards": 2, "expert_flags": flags, "router_flags": flags}


def blend_swap_prepare(context):
    context.notes["token_file"] = context.work / "admin-token"
    if not (context.bin_dir / "expertmesh-admin").exists():
        raise RuntimeError(f"{context.bin_dir / 'expertmesh-admin'} is not built (blends admin API, docs/blends.md)")
    code = (Path(context.model).resolve().parent / "code").resolve()
    started = time.time()
    admin(context, "load-parent", "code", str(code))
    context.notes["load_seconds"] = time.time() - started
    admin(context, "set-split", "prose=1")


def create_blend(context):
    started = time.time()
    admin(context, "create-blend", "mix", "--lambdas", "prose=0.5,code=0.5", "--base", "prose")
    context.notes["blend_seconds"] = time.time() - started
    admin(context, "set-split", "prose=1", "mix=1")
    return f"create-blend mix + split prose=1 mix=1 (build {context.notes['blend_seconds']:.1f} s)"


def move_split(context):
    admin(context, "set-split", "mix=1")
    return "split mix=1"


def rebuild_blend(context):
    started = time.time()
    admin(context, "create-blend", "mix", "--lambdas", "prose=0.7,code=0.3", "--base", "prose")
    return f"rebuild mix: v2 = 0.7 prose + 0.3 code (build {time.time() - started:.1f} s)"


def blend_swap_conclude(context, report):
    lines = [f"The parent `code` was loaded on every shard through the router ({context.notes['load_seconds']:.1f} s) "
             "before the load; the split sent every A/B-keyed request to `prose`. During the load the blend "
             "`mix` = 0.5 prose + 0.5 code (base prose) was built on every shard and committed (two-phase, "
             "through the router), the split moved to prose=1 mix=1 and later to mix=1, and then `mix` was rebuilt "
             "with other lambdas: version 2 replaced version 1 under load (requests already running on v1 "
             "finish on v1, new ones get v2).", "",
             "| blend | version | requests | share | TTFT p50 | e2e p50 |", "| --- | --- | --- | --- | --- | --- |"]
    for blend in report["blends"]:
        share = blend["requests"] / max(1, report["count"])
        lines.append(f"| {blend['blend'] or '(no usage)'} | {blend['version']} | {blend['requests']} | "
                     f"{share * 100:.0f}% | {blend['time_to_first_token']['p50'] * 1000:.0f} ms | "
                     f"{blend['end_to_end']['p50']:.2f} s |")
    lines.append("")
    lines += before_after(context, context.notes.get("event_at", 0.0))
    lines.append("Result: " + ("no request failed during the swap." if report["failed"] == 0
                               else f"{report['failed']} requests failed ({report['status_codes']})."))
    return lines


SCENARIOS = {
    "steady": Scenario(
        description="Steady closed-loop load on 2 expert shards + attention-svc + router-svc.",
        conclude=steady_conclude),
    "shard-kill": Scenario(
        description="Steady load on 2 shards x 2 replicas; kill -9 of one replica of shard 0 during the load.",
        stack_options=lambda work: {"shards": 2, "replicas": 2},
        events=[(0, kill_replica)],
        conclude=shard_kill_conclude),
    "blend-swap": Scenario(
        description="Steady A/B-keyed load (100 keys) on 2 shards; during it a blend is built on every shard "
                    "and the A/B split moved to it; then the blend is rebuilt in place (version 2).",
        stack_options=blend_swap_stack,
        prepare=blend_swap_prepare,
        load_flags=["--ab-keys", "100"],
        events=[(0, create_blend), (12, move_split), (25, rebuild_blend)],
        conclude=blend_swap_conclude),
}
