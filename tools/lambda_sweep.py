#!/usr/bin/env python3
"""The λ sweep of the bundled model family (driven by tools/lambda_sweep.sh).

For λ in a grid, builds the Assembly-of-Experts blend W = (1-λ)·prose + λ·code with expertmesh-merge
(base parent prose, δ = 0) twice — routed experts only (the Chimera recipe) and every tensor — and
measures held-out loss on models/eval/{prose,code}_heldout.txt with expertmesh-eval. Adds a δ sweep
at λ = 0.5, greedy samples at a few λ, and the parents' losses next to models/train_summary.json.
Writes docs/lambda_sweep.{md,tsv,png} and the raw numbers to docs/lambda_sweep.json (--report-only
rewrites the report from it). Only the engine's own tools are used.
"""
import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEXTS = {"prose": os.path.join(REPO, "models/eval/prose_heldout.txt"),
         "code": os.path.join(REPO, "models/eval/code_heldout.txt")}
VARIANTS = [("experts", ["model.layers.*.mlp.experts.*"], "routed experts only"),
            ("all", ["*"], "every tensor")]
PROMPTS = ["The meaning of life is", "def fibonacci(n):\n"]


def log(message):
    print(f"[sweep {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def run(command):
    result = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if result.returncode != 0:
        sys.exit(f"{' '.join(command)} failed ({result.returncode}):\n{result.stderr[-2000:]}")
    return result.stdout


def merge(bin_dir, work, name, lam, globs, delta=0.0):
    recipe = {"name": name,
              "parents": {"prose": os.path.join(REPO, "models/prose"), "code": os.path.join(REPO, "models/code")},
              "lambdas": {"prose": round(1.0 - lam, 10), "code": lam},
              "base": "prose", "delta": delta, "merge": globs}
    recipe_path = os.path.join(work, name + ".json")
    with open(recipe_path, "w") as f:
        json.dump(recipe, f, indent=2)
    out = os.path.join(work, name)
    shutil.rmtree(out, ignore_errors=True)
    run([os.path.join(bin_dir, "expertmesh-merge"), recipe_path, out])
    with open(os.path.join(out, "merge_report.json")) as f:
        return out, json.load(f)


def evaluate(bin_dir, model):
    out = run([os.path.join(bin_dir, "expertmesh-eval"), "--json", "--model", model,
               "--text", ",".join(TEXTS.values())])
    losses = {}
    for line in out.splitlines():
        row = json.loads(line)
        for domain, path in TEXTS.items():
            if row["text"] == path:
                losses[domain] = row["loss"]
    return losses


def generate(bin_dir, model, prompt, tokens):
    out = run([os.path.join(bin_dir, "expertmesh-generate"), "--model", model, "--prompt", prompt,
               "--max_new_tokens", str(tokens)])
    return out.split("text: ", 1)[1].rstrip("\n") if "text: " in out else ""


def fmt(x):
    return f"{x:.4f}"


def write_outputs(args, results):
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "lambda_sweep.json"), "w") as f:
        json.dump(results, f, indent=1)
    args.lambdas = results["lambdas"]
    args.sample_lambdas = results["sample_lambdas"]
    args.max_new_tokens = results["max_new_tokens"]
    rows = {(r["variant"], r["lambda"]): r for r in results["rows"]}
    samples = {(r["lambda"], r["prompt"]): r["text"] for r in results["samples"]}
    parents, deltas, seconds = results["parents"], results["deltas"], results["seconds"]
    tsv = os.path.join(args.out, "lambda_sweep.tsv")
    with open(tsv, "w") as f:
        f.write("lambda\texperts_prose\texperts_code\tall_prose\tall_code\n")
        for lam in args.lambdas:
            e, a = rows[("experts", lam)], rows[("all", lam)]
            f.write(f"{lam}\t{e['prose']:.6f}\t{e['code']:.6f}\t{a['prose']:.6f}\t{a['code']:.6f}\n")

    png = os.path.join(args.out, "lambda_sweep.png")
    base = parents["base"]
    script = f"""
set terminal pngcairo size 960,600 font ",11"
set output "{png}"
set title "Assembly-of-Experts blend (1-λ)·prose + λ·code of the bundled tiny DeepSeek-V3 family"
set xlabel "λ (weight of the code parent)"
set ylabel "held-out cross-entropy (nats/token)"
set key outside right center
set grid
set xrange [0:1]
plot "{tsv}" using 1:2 with linespoints lw 2 pt 7 lc rgb "#1f77b4" title "prose text, experts only", \\
     "{tsv}" using 1:4 with linespoints lw 2 pt 6 dt 2 lc rgb "#1f77b4" title "prose text, all tensors", \\
     "{tsv}" using 1:3 with linespoints lw 2 pt 5 lc rgb "#d62728" title "code text, experts only", \\
     "{tsv}" using 1:5 with linespoints lw 2 pt 4 dt 2 lc rgb "#d62728" title "code text, all tensors", \\
     {base['prose']} with lines dt 3 lc rgb "#1f77b4" title "base parent, prose", \\
     {base['code']} with lines dt 3 lc rgb "#d62728" title "base parent, code"
"""
    if shutil.which("gnuplot"):
        subprocess.run(["gnuplot"], input=script, text=True, check=True)
    else:
        log("gnuplot not found (apt-get install gnuplot-nox): no PNG written")

    with open(os.path.join(REPO, "models/train_summary.json")) as f:
        reference = json.load(f)["results"]

    L = []
    L.append("# λ sweep: Assembly-of-Experts blends of the bundled prose and code parents\n")
    L.append("Generated by `tools/lambda_sweep.sh` (do not edit by hand; rerun it). "
             f"Whole sweep: {seconds:.0f} s on this machine. Recipe format and δ: [blends.md](blends.md).\n")
    L.append("Each point is the checkpoint `expertmesh-merge` writes for the recipe "
             "`parents {prose, code}, lambdas {prose: 1-λ, code: λ}, base prose, delta 0`, merging either the "
             "routed experts only (`model.layers.*.mlp.experts.*`, the R1T Chimera recipe: attention, norms, "
             "shared experts, router and embeddings stay the prose parent's) or every tensor (`*`). "
             "Loss = mean next-token cross-entropy in nats/token by `expertmesh-eval` (CPU engine, float32) over "
             "non-overlapping 256-token windows of `models/eval/prose_heldout.txt` (35,215 targets) and "
             "`models/eval/code_heldout.txt` (27,140 targets).\n")
    L.append("![λ sweep](lambda_sweep.png)\n")
    L.append("| λ (code) | experts only: prose | experts only: code | all tensors: prose | all tensors: code |")
    L.append("|---|---|---|---|---|")
    for lam in args.lambdas:
        e, a = rows[("experts", lam)], rows[("all", lam)]
        L.append(f"| {lam:g} | {fmt(e['prose'])} | {fmt(e['code'])} | {fmt(a['prose'])} | {fmt(a['code'])} |")
    L.append("")

    L.append("## Reading it\n")
    for key, _, label in VARIANTS:
        prose = [rows[(key, lam)]["prose"] for lam in args.lambdas]
        code = [rows[(key, lam)]["code"] for lam in args.lambdas]
        mean = [(p + c) / 2 for p, c in zip(prose, code)]
        best = min(range(len(mean)), key=mean.__getitem__)
        rising = sum(1 for x, y in zip(prose, prose[1:]) if y > x)
        falling = sum(1 for x, y in zip(code, code[1:]) if y < x)
        best_prose = min(range(len(prose)), key=prose.__getitem__)
        best_code = min(range(len(code)), key=code.__getitem__)
        L.append(f"- **{label}**: prose loss goes {fmt(prose[0])} → {fmt(prose[-1])} "
                 f"(rises in {rising} of {len(prose) - 1} steps), code loss {fmt(code[0])} → {fmt(code[-1])} "
                 f"(falls in {falling} of {len(code) - 1} steps). Best mean of the two at λ = {args.lambdas[best]:g}: "
                 f"prose {fmt(prose[best])}, code {fmt(code[best])} (mean {fmt(mean[best])}; base parent "
                 f"{fmt((base['prose'] + base['code']) / 2)}). Lowest prose loss {fmt(prose[best_prose])} at "
                 f"λ = {args.lambdas[best_prose]:g}, lowest code loss {fmt(code[best_code])} at "
                 f"λ = {args.lambdas[best_code]:g} (parents: prose {fmt(parents['prose']['prose'])} on prose, "
                 f"code {fmt(parents['code']['code'])} on code; base {fmt(base['prose'])} / {fmt(base['code'])}).")
    L.append("- λ = 0 is the prose parent and λ = 1 with every tensor merged is the code parent, bit for bit "
             "(1·W + 0·W' = W exactly in float32, and bf16 → float32 → bf16 is exact); λ = 1 with experts only "
             "is a Chimera: the code parent's routed experts inside the prose parent's attention, router and "
             "shared expert.")
    L.append("")

    L.append("## δ at λ = 0.5 (routed experts only)\n")
    L.append("δ keeps the prose (base) tensor wherever max_i ‖W_i − W_base‖_F / ‖W_base‖_F < δ "
             "(see [blends.md](blends.md)). The prose/code expert tensors differ by "
             f"{deltas['min_distance']:.3f} … {deltas['max_distance']:.3f} (median {deltas['median_distance']:.3f}).\n")
    L.append("| δ | merged | kept by δ | prose | code |")
    L.append("|---|---|---|---|---|")
    for row in deltas["rows"]:
        L.append(f"| {row['delta']:g} | {row['merged']} | {row['kept']} | {fmt(row['prose'])} | {fmt(row['code'])} |")
    L.append("")

    L.append("## Parents: engine vs. transformers\n")
    L.append("`expertmesh-eval` on the shipped parents next to `models/train_summary.json` (transformers, float32).\n")
    L.append("| model | prose (engine) | prose (HF) | code (engine) | code (HF) |")
    L.append("|---|---|---|---|---|")
    for name in ("base", "prose", "code"):
        ours, hf = parents[name], reference[name]
        L.append(f"| {name} | {ours['prose']:.6f} | {hf['prose']['loss']:.6f} | {ours['code']:.6f} | "
                 f"{hf['code']['loss']:.6f} |")
    L.append("")

    L.append("## Greedy samples (routed experts only)\n")
    L.append(f"`expertmesh-generate --model BLEND --prompt P --max_new_tokens {args.max_new_tokens}` (greedy).\n")
    for prompt in PROMPTS:
        L.append(f"Prompt `{json.dumps(prompt)}`:\n")
        for lam in args.sample_lambdas:
            text = samples[(lam, prompt)]
            L.append(f"- λ = {lam:g}:")
            L.append("  ```")
            for line in (prompt + text).splitlines() or [""]:
                L.append("  " + line)
            L.append("  ```")
        L.append("")
    with open(os.path.join(args.out, "lambda_sweep.md"), "w") as f:
        f.write("\n".join(L))
    log(f"wrote {args.out}/lambda_sweep.md, .tsv, .png")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bin", default=os.path.join(REPO, "build/bin"))
    parser.add_argument("--lambdas", default=",".join(f"{i / 10:g}" for i in range(11)))
    parser.add_argument("--deltas", default="0,0.33,0.35,0.38")
    parser.add_argument("--sample-lambdas", default="0,0.5,1")
    parser.add_argument("--max-new-tokens", type=int, default=40)
    parser.add_argument("--out", default=os.path.join(REPO, "docs"))
    parser.add_argument("--work", default="", help="working directory for merged checkpoints (default: a temp dir)")
    parser.add_argument("--report-only", action="store_true",
                        help="rewrite lambda_sweep.md/.png from OUT/lambda_sweep.json without merging or evaluating")
    args = parser.parse_args()
    if args.report_only:
        with open(os.path.join(args.out, "lambda_sweep.json")) as f:
            write_outputs(args, json.load(f))
        return
    args.lambdas = [float(x) for x in args.lambdas.split(",")]
    args.sample_lambdas = [float(x) for x in args.sample_lambdas.split(",")]
    deltas = [float(x) for x in args.deltas.split(",")]
    started = time.time()
    work = args.work or tempfile.mkdtemp(prefix="expertmesh-sweep-")
    os.makedirs(work, exist_ok=True)
    try:
        parents = {}
        for name in ("base", "prose", "code"):
            parents[name] = evaluate(args.bin, os.path.join(REPO, "models", name))
            log(f"parent {name}: {parents[name]}")
        rows, samples = {}, {}
        for key, globs, _ in VARIANTS:
            for lam in args.lambdas:
                out, _ = merge(args.bin, work, f"{key}-{lam:g}", lam, globs)
                rows[(key, lam)] = evaluate(args.bin, out)
                log(f"{key} λ={lam:g}: {rows[(key, lam)]}")
                if key == "experts" and lam in args.sample_lambdas:
                    for prompt in PROMPTS:
                        samples[(lam, prompt)] = generate(args.bin, out, prompt, args.max_new_tokens)
                shutil.rmtree(out)
        delta_rows, distances = [], []
        for delta in deltas:
            out, report = merge(args.bin, work, f"delta-{delta:g}", 0.5, VARIANTS[0][1], delta)
            if not distances:
                distances = sorted(t["relative_distance"] for t in report["tensors"] if t["origin"] != "copied")
            losses = evaluate(args.bin, out)
            delta_rows.append(dict(delta=delta, merged=report["counts"]["merged"],
                                   kept=report["counts"]["kept_by_delta"], **losses))
            log(f"δ={delta:g}: {delta_rows[-1]}")
            shutil.rmtree(out)
        delta_info = dict(rows=delta_rows, min_distance=distances[0], max_distance=distances[-1],
                          median_distance=distances[len(distances) // 2])
        results = dict(lambdas=args.lambdas, sample_lambdas=args.sample_lambdas, max_new_tokens=args.max_new_tokens,
                       parents=parents, deltas=delta_info, seconds=time.time() - started,
                       rows=[dict(variant=key, **{"lambda": lam}, **losses) for (key, lam), losses in rows.items()],
                       samples=[{"lambda": lam, "prompt": prompt, "text": text}
                                for (lam, prompt), text in samples.items()])
        write_outputs(args, results)
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
