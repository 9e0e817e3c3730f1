#!/usr/bin/env bash
# Installs the system packages the tests and benchmark use, when missing:
# liburing2 (io_uring transport), fio (data tests, benchmark), a C compiler and
# the kernel headers (the ABI test), util-linux's mountpoint (stuck-mount cleanup).
set -euo pipefail
need=()
ldconfig -p 2>/dev/null | grep -q 'liburing\.so\.2 ' || need+=(liburing2)
command -v fio >/dev/null || need+=(fio)
command -v cc >/dev/null || need+=(gcc libc6-dev)
[ -f /usr/include/linux/fuse.h ] || need+=(linux-libc-dev)
command -v mountpoint >/dev/null || need+=(util-linux)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "denofuse: missing packages ${need[*]} (install them as root)" >&2
    exit 0
  fi
  echo "denofuse: installing ${need[*]} from apt ..." >&2
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >&2
fi
