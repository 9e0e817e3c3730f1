#!/usr/bin/env bash
# Runs a guest suite inside a QEMU guest booted on a kernel the transports' modes need:
#   seed      ../shared/seed-kernel: the seeds' FUSE buffer-ring series (buf_ring, zero_copy);
#             guest/seed/. About 17 minutes to build on 2 CPUs the first time, then cached.
#   mainline  ../shared/mainline-kernel: Linux 7.3, FUSE 7.46 buffer pools (bufpool,
#             bufpool_zero_copy); guest/pools/. About 11-22 minutes the first time, then cached.
# usage: guest.sh seed|mainline build|test|bench [ARGS]
#   build  build (or find) the kernel and print its bzImage path
#   test   deno test the kernel's suite (ARGS go to deno test, e.g. --filter zero_copy)
#   bench  the io_uring modes' benchmark in the guest (ARGS go to bench/run.ts)
# SEED_KERNEL_DIR / MAINLINE_KERNEL_DIR name other copies of those directories; SEED_KERNEL /
# MAINLINE_KERNEL a bzImage of your own (see their READMEs).
set -euo pipefail
marker="denofuse-guest: command started"
# Inside the guest: say the command started, then run it.
if [ "${1:-}" = --in-guest ]; then shift; echo "$marker"; exec "$@"; fi
repo=$(cd "$(dirname "$0")/.." && pwd)
kernel=${1:-}; shift || true
case $kernel in
  seed) dir=${SEED_KERNEL_DIR:-}; name=seed-kernel; suite=guest/seed/; var=SEED_KERNEL ;;
  mainline) dir=${MAINLINE_KERNEL_DIR:-}; name=mainline-kernel; suite=guest/pools/; var=MAINLINE_KERNEL ;;
  *) echo "usage: $0 seed|mainline build|test|bench [ARGS]" >&2; exit 2 ;;
esac
if [ -z "$dir" ]; then
  for d in "$repo/../shared/$name" "/work/shared/$name"; do
    [ -x "$d/run-in-guest.sh" ] && { dir=$d; break; }
  done
fi
if [ -z "$dir" ] || [ ! -x "$dir/run-in-guest.sh" ]; then
  echo "guest: no $name directory (../shared/$name); set ${var}_DIR" >&2
  exit 1
fi
what=${1:-}; shift || true
case $what in
  build) "$dir/build.sh" | tail -1; exit 0 ;;
  test) cmd=(test --allow-all "$@" "$suite") ;;
  bench) cmd=(run -A bench/run.ts --modes --size 64M --runtime 5 --files 300 "$@") ;;
  *) echo "usage: $0 seed|mainline build|test|bench [ARGS]" >&2; exit 2 ;;
esac
command -v qemu-system-x86_64 >/dev/null || { apt-get update -qq && apt-get install -y -qq qemu-system-x86 >&2; }
command -v busybox >/dev/null || { apt-get update -qq && apt-get install -y -qq busybox-static >&2; }
# Deno is installed on the host (the guest sees the host's root read-only).
"$repo/deno" --version >/dev/null
# Build (or find) the kernel once, here, where its output shows.
export "$var=${!var:-$("$dir/build.sh" | tail -1)}"
# The guest's root is read-only: Deno's cache goes to the guest's tmpfs. Under TCG a guest kernel
# now and then panics while it boots (an int3 Oops in sched_clock_cpu as two vCPUs patch static
# keys), before the command runs: that boot, and only that, is tried again (at most 3 boots).
console=$(mktemp /tmp/denofuse-guest.XXXXXX); trap 'rm -f "$console"' EXIT
for boot in 1 2 3; do
  set +e
  "$dir/run-in-guest.sh" -w "$repo" -t "${GUEST_TIMEOUT:-1800}" -- \
    bash "$repo/scripts/guest.sh" --in-guest env DENO_DIR=/tmp/deno-dir CI="${CI:-}" "$repo/deno" "${cmd[@]}" | tee "$console"
  rc=${PIPESTATUS[0]}
  set -e
  if [ "$rc" = 0 ] || grep -q "$marker" "$console" || ! grep -q "Kernel panic" "$console"; then
    exit "$rc"
  fi
  echo "guest: the $name panicked while booting (boot $boot of 3), before the command ran" >&2
done
exit "$rc"
