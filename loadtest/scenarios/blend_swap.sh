#!/usr/bin/env bash
# Load-test scenario "blend-swap" on the real stack (docs/loadtest.md, "Scenarios"): starts the services,
# runs expertmesh-loadtest, writes docs/loadtest/blend-swap/. Extra arguments go to run_scenario.py
# (e.g. --duration 30 --bin build-mine/bin --out /tmp/blend-swap).
set -euo pipefail
cd "$(dirname "$0")/../.."
exec python3 loadtest/scenarios/run_scenario.py blend-swap --bin "${EXPERTMESH_BIN:-build/bin}" "$@"
