#!/usr/bin/env bash
# bench/services/make_bundle.sh: builds fanout_bench, expert-svc and attention-svc here and packs
# them with the Debian .so files they need (OpenBLAS included: the experts' speed is the point)
# into .services-bundle/bundle.tar.xz (git-ignored; ~11 MB, the device call's carry limit is 64 MiB
# for the whole tree), which run_on_device.sh unpacks and runs there.
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build-services}
cmake --build "$BUILD" -j2 --target fanout_bench expert-svc attention-svc
staging=$(mktemp -d)
trap 'rm -rf "$staging"' EXIT
../shared/tools/device-bundle "$staging" "$BUILD/bin/fanout_bench" "$BUILD/bin/expert-svc" \
  "$BUILD/bin/attention-svc" >/dev/null
strip --strip-debug "$staging"/bin/*
rm -rf .services-bundle && mkdir -p .services-bundle
tar -C "$staging" -cf - bin lib | xz -9 -T2 > .services-bundle/bundle.tar.xz
du -sh .services-bundle/bundle.tar.xz
