#!/usr/bin/env bash
# Load-test scenario "shard-kill" on the real stack (docs/loadtest.md, "Scenarios"): starts the services,
# runs expertmesh-loadtest, writes docs/loadtest/shard-kill/. Extra arguments go to run_scenario.py
# (e.g. --duration 30 --bin build-mine/bin --out /tmp/shard-kill).
set -euo pipefail
cd "$(dirname "$0")/../.."
exec python3 loadtest/scenarios/run_scenario.py shard-kill --bin "${EXPERTMESH_BIN:-build/bin}" "$@"
