#!/usr/bin/env bash
# Load-test scenario "steady" on the real stack (docs/loadtest.md, "Scenarios"): starts the services,
# runs expertmesh-loadtest, writes docs/loadtest/steady/. Extra arguments go to run_scenario.py
# (e.g. --duration 30 --bin build-mine/bin --out /tmp/steady).
set -euo pipefail
cd "$(dirname "$0")/../.."
exec python3 loadtest/scenarios/run_scenario.py steady --bin "${EXPERTMESH_BIN:-build/bin}" "$@"
