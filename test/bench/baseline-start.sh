#!/bin/bash
# Baseline for the start-latency benchmark: the same thin root, mounts, unshare and chroot (by
# the same jail init) that the linux driver makes, done directly by a script with no
# orchestration, one mount(8) call per mount point (bind, read-only and propagation together).
# Usage: baseline-start.sh JAIL_DIR INIT -- CMD...   Prints the init's host pid.
set -euo pipefail
dir=$1 init=$2; shift 3
root=$dir/root
mkdir -p "$root"
mount --bind --make-unbindable "$root" "$root"
for d in usr bin sbin lib lib32 lib64 libx32; do
  [ -e "/$d" ] || continue
  if [ -L "/$d" ]; then ln -sfn "$(readlink "/$d")" "$root/$d"; continue; fi
  mkdir -p "$root/$d"
  mount --bind --make-private -o ro "/$d" "$root/$d"
done
mkdir -p "$root/etc" "$root/proc" "$root/dev" "$root/tmp"
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n' > "$root/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' > "$root/etc/group"
printf '127.0.0.1 localhost bench\n' > "$root/etc/hosts"
cp /etc/resolv.conf "$root/etc/resolv.conf" 2>/dev/null || true
echo bench > "$root/etc/hostname"
mount -t tmpfs -o mode=755,nosuid,noexec,size=1m tmpfs "$root/dev"
for n in null zero full random urandom tty; do
  touch "$root/dev/$n"
  mount --bind --make-private "/dev/$n" "$root/dev/$n"
done
mkdir -p "$root/dev/pts" "$root/dev/shm"
mount -t devpts -o newinstance,ptmxmode=0666,mode=0620,nosuid,noexec devpts "$root/dev/pts"
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$root/dev/shm"
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$root/tmp"
setsid unshare --pid --fork --mount --uts --ipc --propagation private -- \
  "$init" "$dir/exit-code" "$root" bench inherit -- "$@" </dev/null >"$dir/console.log" 2>&1 &
up=$!
children=/proc/$up/task/$up/children
while :; do
  read -r pid _ < "$children" || true
  [ -n "${pid:-}" ] && break
done
echo "$pid"
