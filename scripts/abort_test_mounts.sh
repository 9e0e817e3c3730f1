#!/usr/bin/env bash
# Abort and detach FUSE mounts left by denofuse's tests (mountpoints under
# /tmp/denofuse-*), by connection number from mountinfo: no stat(2) of the
# mount, which would block on a stuck server, and no other mount is touched.
set -u
conns=/sys/fs/fuse/connections
while read -r _ _ dev _ mnt _rest; do
  case "$mnt" in /tmp/denofuse-*) ;; *) continue ;; esac
  case "$_rest" in *" - fuse"*) ;; *) continue ;; esac
  # fusectl only when there is something to abort.
  grep -q " $conns fusectl " /proc/mounts || mount -t fusectl none "$conns" 2>/dev/null
  echo "abort_test_mounts: aborting leftover mount $mnt (connection ${dev#*:})" >&2
  echo 1 > "$conns/${dev#*:}/abort" 2>/dev/null
  umount -l "$mnt" 2>/dev/null
done < /proc/self/mountinfo
exit 0
