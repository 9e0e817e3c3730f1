#!/usr/bin/env bash
# Runs guest/ (the io_uring buffer-ring and zero-copy modes) inside a QEMU guest booted on a
# kernel that carries the FUSE buffer-ring series: ../shared/seed-kernel builds it (once, about
# 17 minutes on 2 CPUs, then cached) and boots it. SEED_KERNEL_DIR names another copy of that
# directory; SEED_KERNEL a bzImage of your own (see ../shared/seed-kernel/README.md).
# `--build-only` builds (or finds) the kernel and exits.
# Extra arguments go to `deno test` (e.g. --filter zero_copy).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
seed=${SEED_KERNEL_DIR:-}
if [ -z "$seed" ]; then
  for d in "$repo/../shared/seed-kernel" /work/shared/seed-kernel; do
    [ -x "$d/run-in-guest.sh" ] && { seed=$d; break; }
  done
fi
if [ -z "$seed" ] || [ ! -x "$seed/run-in-guest.sh" ]; then
  echo "guest tests: no seed-kernel directory (../shared/seed-kernel); set SEED_KERNEL_DIR" >&2
  exit 1
fi
command -v qemu-system-x86_64 >/dev/null || { apt-get update -qq && apt-get install -y -qq qemu-system-x86 >&2; }
command -v busybox >/dev/null || { apt-get update -qq && apt-get install -y -qq busybox-static >&2; }
# Deno is installed on the host (the guest sees the host's root read-only).
"$repo/deno" --version >/dev/null
export SEED_KERNEL=${SEED_KERNEL:-$("$seed/build.sh" | tail -1)}
what=${1:-}; shift || true
case $what in
  build) echo "$SEED_KERNEL"; exit 0 ;;
  test) cmd=(test --allow-all "$@" guest/) ;;
  bench) cmd=(run -A bench/run.ts --modes --size 64M --runtime 5 --files 300 "$@") ;;
  *) echo "usage: $0 build | test [ARGS] | bench [ARGS]" >&2; exit 2 ;;
esac
# The guest's root is read-only: Deno's cache goes to the guest's tmpfs.
exec "$seed/run-in-guest.sh" -w "$repo" -t "${GUEST_TIMEOUT:-1800}" -- \
  env DENO_DIR=/tmp/deno-dir CI="${CI:-}" "$repo/deno" "${cmd[@]}"
