#!/usr/bin/env python3
"""Deploy checks (ctest label "deploy"), offline.

manifests: `kubectl kustomize` renders the base, every overlay under deploy/overlays and the
Grafana dashboard ConfigMap (deploy/grafana); every
rendered object is validated against the Kubernetes and prometheus-operator schemas
(kubernetes-models, @kubernetes-models/prometheus-operator: installed by `npm ci` from the
committed package-lock.json into the build tree) including unknown fields; consistency checks
(check_rendered.mjs); the validator must reject tests/deploy/testdata/invalid.yaml; every
Dockerfile copies paths that exist and builds the CMake target it is named after.
flags: every flag the manifests pass is accepted by the service binary as written (run with
`FLAG=1 --helpfull`: absl names unknown flags) or listed
in deploy/PENDING_FLAGS, and no listed flag is accepted already.
"""
import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

SERVICES = {"router": "router-svc", "attention": "attention-svc", "expert": "expert-svc"}


def fail(message):
    print(f"FAIL {message}")
    sys.exit(1)


def run(command, **kwargs):
    return subprocess.run(command, capture_output=True, text=True, **kwargs)


def kubectl():
    path = os.environ.get("KUBECTL") or shutil.which("kubectl")
    if not path:
        fail("kubectl not found: run scripts/install-deps (Debian package kubernetes-client)")
    return path


def render(source, target):
    result = run([kubectl(), "kustomize", str(target)])
    # Newer kubectl warns about fields kept for kustomize 2.0.3 (bases, patchesStrategicMerge).
    unexpected = [line for line in result.stderr.splitlines() if line.strip() and "is deprecated" not in line]
    if result.returncode != 0 or unexpected or not result.stdout.strip():
        fail(f"kubectl kustomize {target.relative_to(source)}: exit {result.returncode}\n{result.stderr}")
    return result.stdout


def prepare_tools(source, binary_dir):
    """Copies tests/deploy/tools into the build tree and runs `npm ci` there when its lock changed."""
    tools = source / "tests/deploy/tools"
    work = binary_dir / "deploy-tools"
    work.mkdir(parents=True, exist_ok=True)
    for name in ["package.json", "package-lock.json", "validate.mjs", "strict_fields.mjs", "check_rendered.mjs"]:
        shutil.copy2(tools / name, work / name)
    lock_hash = hashlib.sha256((tools / "package-lock.json").read_bytes()).hexdigest()
    stamp = work / "node_modules/.expertmesh-lock-sha256"
    if not stamp.exists() or stamp.read_text() != lock_hash:
        for tool in ["node", "npm"]:
            if not shutil.which(tool):
                fail(f"{tool} not found: run scripts/install-deps (Debian packages nodejs, npm)")
        print("npm ci (schema packages from the committed package-lock.json)")
        result = run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=work)
        if result.returncode != 0:
            fail(f"npm ci failed (the npm registry must be reachable the first time):\n{result.stdout}{result.stderr}")
        stamp.write_text(lock_hash)
    return work


def check_manifests(source, binary_dir):
    work = prepare_tools(source, binary_dir)
    rendered_dir = binary_dir / "deploy-rendered"
    rendered_dir.mkdir(exist_ok=True)

    bad = run(["node", "validate.mjs", str(source / "tests/deploy/testdata/invalid.yaml")], cwd=work)
    expected = ["spec/replicas must be integer", "unknown field StatefulSet.spec.template.spec.containers[0].readinesProbe",
                "must have required property selector", "unknown apiVersion example.com/v1", "4 objects, 4 invalid"]
    if bad.returncode == 0 or any(text not in bad.stdout for text in expected):
        fail(f"the validator did not reject testdata/invalid.yaml as expected:\n{bad.stdout}{bad.stderr}")
    print("ok   validator rejects testdata/invalid.yaml (wrong type, unknown field, missing field, unknown kind)")

    overlays = sorted(p for p in (source / "deploy/overlays").iterdir() if (p / "kustomization.yaml").exists())
    if {p.name for p in overlays} < {"cpu-tiny", "gpu"}:
        fail(f"overlays cpu-tiny and gpu expected, found {[p.name for p in overlays]}")
    for target in [source / "deploy/base"] + overlays + [source / "deploy/grafana"]:
        name = target.name
        path = rendered_dir / f"{name}.yaml"
        path.write_text(render(source, target))
        result = run(["node", "validate.mjs", str(path)], cwd=work)
        print(result.stdout, end="")
        if result.returncode != 0:
            fail(f"{name}: schema validation failed\n{result.stderr}")
        if name in ("base", "grafana"):
            continue
        flags = [f"--gpu={1 if name == 'gpu' else 0}"]
        if name == "gpu":
            flags.append("--external-secret=expertmesh-admin-token")  # created by the operator
        result = run(["node", "check_rendered.mjs", str(path)] + flags, cwd=work)
        print(f"{name}: {result.stdout}", end="")
        if result.returncode != 0:
            fail(f"{name}: consistency checks failed\n{result.stderr}")

    targets = (source / "attention-svc/CMakeLists.txt").read_text() + (source / "expert-svc/CMakeLists.txt").read_text() + \
        (source / "router-svc/CMakeLists.txt").read_text()
    for dockerfile in sorted((source / "deploy/docker").glob("*.Dockerfile")):
        text = dockerfile.read_text()
        service = dockerfile.name.removesuffix(".Dockerfile")
        for copied in re.findall(r"^COPY (?!--from)(\S+)", text, re.M):
            if not (source / copied).exists():
                fail(f"{dockerfile.name}: COPY {copied} does not exist")
        if f"--target {service}" not in text or f"add_executable({service} " not in targets:
            fail(f"{dockerfile.name}: must build the CMake target {service}")
        if f'ENTRYPOINT ["/opt/expertmesh/bin/{service}"]' not in text:
            fail(f"{dockerfile.name}: entrypoint must be {service}")
        print(f"ok   {dockerfile.name}")


def accepts_flag(binary, flag):
    """Whether `binary` parses `flag` as written (dashes) - asked with a value and --helpfull."""
    result = run([str(binary), f"{flag}=1", "--helpfull"])
    output = result.stdout + result.stderr
    if "--helpfull" not in output and "Flags from" not in output and not re.search(r"^\s+--\w+ \(", output, re.M):
        fail(f"{binary.name} {flag}=1 --helpfull printed no flag list:\n{output[-500:]}")
    names = {flag[2:], flag[2:].replace("-", "_")}
    return not any(f"Unknown command line flag '{name}'" in output for name in names)


def check_flags(source, binary_dir):
    rendered = render(source, source / "deploy/overlays/gpu") + render(source, source / "deploy/overlays/cpu-tiny")
    passed = {}
    for block in rendered.split("\n---"):
        for binary in SERVICES.values():
            if f"image: expertmesh/{binary}" in block:
                # Flags in args (and in the expert's start script).
                for flag in re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)=", block):
                    passed.setdefault(binary, set()).add(flag)
    pending = {}
    for line in (source / "deploy/PENDING_FLAGS").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            binary, flag = line.split()
            pending.setdefault(binary, set()).add(flag)
    problems = []
    for binary in SERVICES.values():
        path = binary_dir / "bin" / binary
        if not path.exists():
            fail(f"{path} not built")
        if accepts_flag(path, "--no-such-flag-for-expertmesh-deploy-test"):
            fail(f"{binary} seems to accept any flag; the check would be vacuous")
        candidates = passed.get(binary, set()) | pending.get(binary, set())
        known = {flag for flag in candidates if accepts_flag(path, flag)}
        for flag in sorted(passed.get(binary, set())):
            if flag not in known and flag not in pending.get(binary, set()):
                problems.append(f"manifests pass {binary} {flag}, which it does not accept (and deploy/PENDING_FLAGS does not list)")
        for flag in sorted(pending.get(binary, set())):
            if flag in known:
                problems.append(f"{binary} accepts {flag} now: delete its line from deploy/PENDING_FLAGS")
            if flag not in passed.get(binary, set()):
                problems.append(f"deploy/PENDING_FLAGS lists {binary} {flag}, which the manifests do not pass")
        print(f"{binary}: manifests pass {sorted(passed.get(binary, set()))}")
    for p in problems:
        print(f"FAIL {p}")
    if problems:
        sys.exit(1)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("check", choices=["manifests", "flags"])
    parser.add_argument("--source", type=Path, default=Path(os.environ.get("EXPERTMESH_SOURCE_DIR", ".")))
    parser.add_argument("--binary-dir", type=Path, default=Path(os.environ.get("EXPERTMESH_BINARY_DIR", "build")))
    args = parser.parse_args()
    source, binary_dir = args.source.resolve(), args.binary_dir.resolve()
    if args.check == "manifests":
        check_manifests(source, binary_dir)
    else:
        check_flags(source, binary_dir)
    print("PASS")


if __name__ == "__main__":
    main()
