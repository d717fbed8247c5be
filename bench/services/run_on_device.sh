#!/usr/bin/env bash
# bench/services/run_on_device.sh: the services benchmark on the device machine's CPU cores, from
# .services-bundle/bundle.tar.xz (made here by bench/services/make_bundle.sh). Extra arguments go
# to fanout_bench. Writes $OUT/services_bench.md (the tables) and $OUT/services_bench.log.
#   device call: command "bash bench/services/run_on_device.sh", carry [".services-bundle"]
set -uo pipefail
OUT=${OUT:-/tmp/services-bench-out}
mkdir -p "$OUT"
BUNDLE=/tmp/services-bundle
rm -rf "$BUNDLE" && mkdir -p "$BUNDLE"
tar -C "$BUNDLE" -xJf .services-bundle/bundle.tar.xz || exit 1
export LD_LIBRARY_PATH=$BUNDLE/lib:${LD_LIBRARY_PATH:-}
echo "cores: $(nproc),$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2), $(free -g | awk '/Mem:/ {print $2}') GB" \
  | tee "$OUT/services_bench.log"
timeout 560 "$BUNDLE/bin/fanout_bench" --bin-dir="$BUNDLE" --work-dir=/tmp/services-bench \
  --markdown="$OUT/services_bench.md" "$@" 2>&1 | tee -a "$OUT/services_bench.log"
