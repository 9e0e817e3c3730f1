#!/usr/bin/env bash
# Mainline 7.3 (FUSE 7.46: io_uring buffer pools and zero-copy), built and booted by
# ../shared/mainline-kernel (once, about 11 minutes on 2 CPUs, then cached), for the ABI test
# against its headers (tests/unit/abi_test.ts) and, next, the guest tests of its modes.
# MAINLINE_KERNEL_DIR names another copy of that directory.
#   bash scripts/mainline.sh build   build (or find) the kernel; print its bzImage path
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
dir=${MAINLINE_KERNEL_DIR:-}
if [ -z "$dir" ]; then
  for d in "$repo/../shared/mainline-kernel" /work/shared/mainline-kernel; do
    [ -x "$d/build.sh" ] && { dir=$d; break; }
  done
fi
if [ -z "$dir" ] || [ ! -x "$dir/build.sh" ]; then
  echo "mainline kernel: no ../shared/mainline-kernel directory; set MAINLINE_KERNEL_DIR" >&2
  exit 1
fi
case ${1:-} in
  build) "$dir/build.sh" | tail -1 ;;
  *) echo "usage: $0 build" >&2; exit 2 ;;
esac
