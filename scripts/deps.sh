#!/usr/bin/env bash
# Installs the system packages the tests and benchmark use, when missing:
# liburing2 (io_uring transport), fio (data tests, benchmark), a C compiler, the
# kernel's and liburing's headers (the ABI and ring layout tests), util-linux's
# mountpoint (stuck-mount cleanup), fuse3's fusermount3 (mounts by other users).
set -euo pipefail
need=()
ldconfig -p 2>/dev/null | grep -q 'liburing\.so\.2 ' || need+=(liburing2)
command -v fio >/dev/null || need+=(fio)
command -v cc >/dev/null || need+=(gcc libc6-dev)
[ -f /usr/include/linux/fuse.h ] || need+=(linux-libc-dev)
[ -f /usr/include/liburing.h ] || need+=(liburing-dev)
command -v mountpoint >/dev/null || need+=(util-linux)
command -v fusermount3 >/dev/null || need+=(fuse3)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "denofuse: missing packages ${need[*]} (install them as root)" >&2
    exit 0
  fi
  echo "denofuse: installing ${need[*]} from apt ..." >&2
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >&2
fi
