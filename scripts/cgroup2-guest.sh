#!/usr/bin/env bash
# A pure cgroup v2 guest (QEMU, software emulation) for the cgroup v2 test lane.
#
#   scripts/cgroup2-guest.sh build          build the guest unless the cached one is current
#   scripts/cgroup2-guest.sh run [--results DIR] CMD...
#                                           boot it, run CMD ARGS (as root) in the repository, print
#                                           its output, copy DIR (a path under the repository) back,
#                                           power off; exits with CMD's status
#
# Everything comes from apt: Debian's generic 6.1 kernel (`apt-get download`, unpacked, not
# installed), busybox-static for the initramfs, debootstrap for the root disk (runc, runsc,
# python3). Cached under $CORRAL_GUEST_DIR (default /var/lib/corral/guest), rebuilt when its build
# steps change. The guest boots with cgroup_no_v1=all and mounts only cgroup2. Every disk is a plain
# virtio disk, no host file system is shared (9p depends on the host's file system and QEMU's 9p
# server; QEMU died of SIGSEGV on a CI host about when the guest mounted its shares): the root disk opened snapshot=on (writes discarded, so guests
# can share it); the repository, /usr/share/dotnet and the default image as ext4 images made with
# `mkfs.ext4 -d` (no mount) and mounted at their host paths (the repository's writes discarded too;
# dotnet's and the image's disks cached); an io disk carries a tar of the run script, the command and
# its environment in, and a tar of its exit status and the results directory out. No network.
# Facts: /work/shared/notes/runtime-facts.md.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
guest="${CORRAL_GUEST_DIR:-/var/lib/corral/guest}"
data_dir="${CORRAL_DATA_DIR:-/var/lib/corral}"
suite=bookworm
kernel_pkg=linux-image-amd64      # the metapackage names the current 6.1 ABI
modules=(virtio_pci virtio_blk ext4 overlay)
packages=runc,runsc,crun,python3-minimal,procps,libstdc++6,zlib1g,libssl3,libicu72

cleanup=()
qemu_pid=""
# Never leave a qemu or a half-built guest behind, whatever ends this script.
on_exit() {
  [ -n "$qemu_pid" ] && kill "$qemu_pid" 2>/dev/null
  [ ${#cleanup[@]} -gt 0 ] && rm -rf "${cleanup[@]}"
  return 0
}
trap on_exit EXIT
trap 'exit 130' INT TERM

log() { echo "cgroup2-guest: $*" >&2; }
die() { echo "cgroup2-guest: $*" >&2; exit 125; }

# What decides the cache: the build steps (this script's build functions, package and module lists)
# and the kernel ABI apt offers; editing run() does not rebuild.
inputs_hash() {
  local abi
  abi=$(apt-cache depends "$kernel_pkg" 2>/dev/null | sed -n 's/^ *Depends: \(linux-image-[0-9].*-amd64\)$/\1/p' | head -1)
  { declare -f build extract_vmlinux; echo "$suite ${modules[*]} $packages $abi"; } | sha256sum | cut -d' ' -f1
}

need_tools() {
  local need=()
  command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
  dpkg -s busybox-static >/dev/null 2>&1 || need+=(busybox-static)
  command -v debootstrap >/dev/null || need+=(debootstrap)
  command -v mkfs.ext4 >/dev/null || need+=(e2fsprogs)
  command -v cpio >/dev/null || need+=(cpio)
  command -v depmod >/dev/null || need+=(kmod)
  command -v xz >/dev/null || need+=(xz-utils)
  if [ ${#need[@]} -gt 0 ]; then
    log "installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2 && apt-get install -y -qq --no-install-recommends "${need[@]}" >&2 || die "cannot install ${need[*]}"
  fi
}

# The uncompressed vmlinux inside Debian's bzImage (xz): booted directly via PVH, ~5 s faster under TCG.
extract_vmlinux() {
  local bz=$1 out=$2 offset
  offset=$(LC_ALL=C grep -obUaP '\xfd7zXZ\x00' "$bz" | head -1 | cut -d: -f1)
  [ -n "$offset" ] || return 1
  tail -c +"$((offset + 1))" "$bz" | xz -dc 2>/dev/null >"$out" || true   # trailing data after the stream: xz complains
  [ "$(head -c 4 "$out" | od -An -c | tr -d ' ')" = '177ELF' ]
}

build() {
  local hash
  need_tools
  hash=$(inputs_hash)
  if [ -f "$guest/ready" ] && [ "$(cat "$guest/ready")" = "$hash" ]; then
    return 0
  fi
  log "building the guest in $guest (debootstrap, about two minutes)"
  local started=$SECONDS work
  mkdir -p "$guest"
  work=$(mktemp -d "$guest/build.XXXXXX")
  cleanup+=("$work")

  # Kernel and modules, unpacked from the .deb.
  (cd "$work" && apt-get download "$(apt-cache depends "$kernel_pkg" | sed -n 's/^ *Depends: \(linux-image-[0-9].*-amd64\)$/\1/p' | head -1)" >/dev/null 2>&1) \
    || die "apt-get download of the kernel failed"
  dpkg-deb -x "$work"/linux-image-*.deb "$work/k"
  local kver
  kver=$(ls "$work/k/lib/modules")
  depmod -b "$work/k" "$kver"
  extract_vmlinux "$work/k/boot/vmlinuz-$kver" "$work/vmlinux" || cp "$work/k/boot/vmlinuz-$kver" "$work/vmlinux"

  # Initramfs: busybox, the modules in dependency order (signatures stripped: faster to load), /init.
  local ird="$work/initrd"
  mkdir -p "$ird"/{bin,dev,proc,sys,newroot,lib/modules}
  cp /bin/busybox "$ird/bin/busybox"
  for applet in sh mount insmod switch_root mkdir echo cat sleep; do ln -s busybox "$ird/bin/$applet"; done
  local order="$ird/lib/modules/order" m f
  : >"$order"
  for m in "${modules[@]}"; do
    modprobe -d "$work/k" -S "$kver" --show-depends "$m" | awk '$1 == "insmod" { print $2 }' | while read -r f; do
      local base; base=$(basename "$f")
      if ! grep -qx "$base" "$order"; then
        cp "$f" "$ird/lib/modules/$base"
        strip --strip-debug "$ird/lib/modules/$base" 2>/dev/null || true
        echo "$base" >>"$order"
      fi
    done
  done
  cat >"$ird/init" <<'INIT'
#!/bin/sh
mount -t proc proc /proc; mount -t sysfs sysfs /sys; mount -t devtmpfs devtmpfs /dev
while read -r m; do insmod "/lib/modules/$m" 2>/dev/null; done </lib/modules/order
root=""; i=0
while [ $i -lt 100 ]; do
  for d in /sys/block/vd*; do [ "$(cat "$d/serial" 2>/dev/null)" = corral-root ] && root=/dev/${d##*/}; done
  [ -n "$root" ] && [ -b "$root" ] && break
  sleep 0.1; i=$((i+1))
done
mount -t ext4 "$root" /newroot || { echo "cgroup2-guest: no root disk"; echo o >/proc/sysrq-trigger; }
umount /proc /sys /dev 2>/dev/null
exec switch_root /newroot /sbin/corral-guest-init
INIT
  chmod +x "$ird/init"
  (cd "$ird" && find . | cpio -o -H newc --quiet) >"$work/initrd.img"

  # Root disk: debootstrap, the guest's init, an ext4 image of it.
  local rfs="$work/rootfs"
  debootstrap --variant=minbase --include="$packages" "$suite" "$rfs" >"$work/debootstrap.log" 2>&1 \
    || { tail -5 "$work/debootstrap.log" >&2; die "debootstrap failed"; }
  rm -rf "$rfs"/var/cache/apt/archives/*.deb "$rfs"/var/lib/apt/lists/*
  ln -sf /usr/share/dotnet/dotnet "$rfs/usr/bin/dotnet"
  cat >"$rfs/sbin/corral-guest-init" <<'INIT'
#!/bin/sh
# PID 1 of the cgroup v2 guest: mounts, cgroup2, then the run script from the io disk; powers off.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root
mount -t proc proc /proc; mount -t sysfs sysfs /sys; mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm; mount -t devpts devpts /dev/pts; mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs -o mode=0755 tmpfs /run; mount -t tmpfs tmpfs /tmp; mount -t tmpfs tmpfs /var/tmp
mount -t cgroup2 -o nsdelegate cgroup2 /sys/fs/cgroup
for c in $(cat /sys/fs/cgroup/cgroup.controllers); do echo "+$c" >/sys/fs/cgroup/cgroup.subtree_control 2>/dev/null; done
hostname corral-v2
io=""
for d in /sys/block/vd*; do [ "$(cat "$d/serial" 2>/dev/null)" = corral-io ] && io=/dev/${d##*/}; done
mkdir -p /run/io
if [ -n "$io" ] && tar -xf "$io" -C /run/io 2>/dev/null; then
  /bin/sh /run/io/boot "$io" </dev/null >/dev/console 2>&1
else
  echo "cgroup2-guest: no io disk" >/dev/console
fi
sync
echo o >/proc/sysrq-trigger
sleep 10 2>/dev/null
INIT
  chmod +x "$rfs/sbin/corral-guest-init"
  mkdir -p "$rfs/var/lib/corral/images/default"
  local size_mb
  size_mb=$(( $(du -sm "$rfs" | cut -f1) + 256 ))
  mkfs.ext4 -q -F -L corral-v2 -d "$rfs" "$work/root.ext4" "${size_mb}M" || die "mkfs.ext4 failed"

  mv -f "$work/vmlinux" "$guest/vmlinux"
  mv -f "$work/initrd.img" "$guest/initrd.img"
  mv -f "$work/root.ext4" "$guest/root.ext4"
  echo "$kver" >"$guest/kernel"
  echo "$hash" >"$guest/ready"
  log "built in $((SECONDS - started)) s (kernel $kver)"
}

# An ext4 image of DIR (mkfs.ext4 -d: no mount, no loop device) with ROOM MiB free.
make_disk() {
  local dir=$1 out=$2 room=$3 size_mb
  size_mb=$(( $(du -sm "$dir" | cut -f1) * 11 / 10 + room ))
  rm -f "$out"
  mkfs.ext4 -q -F -O ^has_journal -E root_owner=0:0 -d "$dir" "$out" "${size_mb}M" >/dev/null || die "mkfs.ext4 -d $dir failed"
}

# The disk of a read-only tree, cached in $guest under NAME while the tree's files are the same.
cached_disk() {
  local dir=$1 name=$2 key tmp
  key=$(find "$dir" -printf '%P %s %T@ %m\n' 2>/dev/null | sort | sha256sum | cut -d' ' -f1)
  if [ ! -f "$guest/$name.ext4" ] || [ "$(cat "$guest/$name.key" 2>/dev/null)" != "$key" ]; then
    tmp=$(mktemp "$guest/$name.XXXXXX")
    cleanup+=("$tmp")
    make_disk "$dir" "$tmp" 16
    mv -f "$tmp" "$guest/$name.ext4"
    echo "$key" >"$guest/$name.key"
  fi
  echo "$guest/$name.ext4"
}

# Why QEMU died, for the log: its signal, the kernel's line about it, the host CPU and QEMU's version.
qemu_diagnostics() {
  local status=$1
  log "qemu exited with status $status$([ "$status" -gt 128 ] && echo " (signal $((status - 128)))")"
  log "host: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), $(nproc) CPUs, $(uname -r); $(qemu-system-x86_64 --version | head -1)"
  dmesg 2>/dev/null | grep -i -E 'qemu|segfault|traps:' | tail -3 | sed 's/^/cgroup2-guest: dmesg: /' >&2 || true
}

run() {
  local results=""
  if [ "${1:-}" = --results ]; then results=$(realpath -m "$2"); shift 2; fi
  [ $# -gt 0 ] || die "run: no command"
  case "$results" in ""|"$here"/*) ;; *) die "run: --results must be under $here" ;; esac
  build
  local work rc image="" attempt status
  work=$(mktemp -d /tmp/corral-guest-run.XXXXXX)
  cleanup+=("$work")

  # Disks: the repository (its writes are discarded: snapshot=on), dotnet and the default image (cached).
  make_disk "$here" "$work/repo.ext4" 1024
  local dotnet_disk image_disk=""
  dotnet_disk=$(cached_disk /usr/share/dotnet dotnet)
  if [ -f "$data_dir/images/default/ready" ]; then
    image="$data_dir/images/default"
    image_disk=$(cached_disk "$image" image)
  fi

  # The io disk's input: the run script (mounts, the command, its status and results out), the command, its environment.
  mkdir -p "$work/in"
  printf '%q ' "$@" >"$work/in/cmd"
  { printf 'REPO=%q\nIMAGE=%q\nRESULTS=%q\n' "$here" "$image" "$results"
    printf 'export %s\n' CI="${CI:-}" DOTNET_ROOT=/usr/share/dotnet DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1 CORRAL_CGROUP2_LANE=1 CORRAL_TEST_TIME_SCALE="${CORRAL_TEST_TIME_SCALE:-4}"; } >"$work/in/env"
  cat >"$work/in/boot" <<'BOOT'
# Run by the guest's init with the io disk as $1 (output to the console).
io=$1
disk() { for d in /sys/block/vd*; do [ "$(cat "$d/serial" 2>/dev/null)" = "$1" ] && echo "/dev/${d##*/}"; done; }
. /run/io/env
mkdir -p "$REPO" /usr/share/dotnet /run/out
mount -t ext4 "$(disk corral-repo)" "$REPO" || echo "cgroup2-guest: cannot mount the repository disk"
mount -t ext4 -o ro "$(disk corral-dotnet)" /usr/share/dotnet || echo "cgroup2-guest: cannot mount the dotnet disk"
[ -n "$IMAGE" ] && { mkdir -p "$IMAGE"; mount -t ext4 -o ro "$(disk corral-image)" "$IMAGE" || echo "cgroup2-guest: cannot mount the image disk"; }
rmdir "$REPO/lost+found" 2>/dev/null
cd "$REPO" && /bin/bash /run/io/cmd </dev/null
echo $? >/run/out/rc
[ -n "$RESULTS" ] && [ -d "$RESULTS" ] && cp -a "$RESULTS" /run/out/results
tar -C /run/out -cf "$io" . || echo "cgroup2-guest: cannot write the io disk"
sync
BOOT

  # Software emulation; if QEMU itself dies (a signal, no exit status from the guest), once more with
  # one emulation thread, the other setting most likely to avoid what crashed it.
  local accels=("tcg,thread=multi,tb-size=512" "tcg,thread=single,tb-size=512")
  for attempt in 0 1; do
    rm -rf "$work/out" "$work/io.img" && mkdir -p "$work/out"
    tar -C "$work/in" -cf "$work/io.img" . && truncate -s 256M "$work/io.img"
    local disks=(
      -drive "file=$guest/root.ext4,if=none,id=root,format=raw,snapshot=on" -device virtio-blk-pci,drive=root,serial=corral-root
      -drive "file=$work/io.img,if=none,id=io,format=raw" -device virtio-blk-pci,drive=io,serial=corral-io
      -drive "file=$work/repo.ext4,if=none,id=repo,format=raw,snapshot=on" -device virtio-blk-pci,drive=repo,serial=corral-repo
      -drive "file=$dotnet_disk,if=none,id=dotnet,format=raw,readonly=on" -device virtio-blk-pci,drive=dotnet,serial=corral-dotnet
    )
    [ -n "$image_disk" ] && disks+=(-drive "file=$image_disk,if=none,id=image,format=raw,readonly=on" -device virtio-blk-pci,drive=image,serial=corral-image)
    qemu-system-x86_64 -accel "${accels[$attempt]}" -cpu max -smp "${CORRAL_GUEST_CPUS:-2}" -m "${CORRAL_GUEST_MEMORY:-4G}" \
      -nodefaults -no-user-config -display none -serial stdio -no-reboot -nic none \
      -kernel "$guest/vmlinux" -initrd "$guest/initrd.img" \
      -append "console=ttyS0 cgroup_no_v1=all mitigations=off pci=noacpi quiet loglevel=3 panic=-1" \
      "${disks[@]}" </dev/null &
    qemu_pid=$!
    status=0
    wait "$qemu_pid" || status=$?
    qemu_pid=""
    tar -xf "$work/io.img" -C "$work/out" 2>/dev/null || true
    if [ -f "$work/out/rc" ]; then break; fi
    qemu_diagnostics "$status"
    [ "$status" -gt 128 ] && [ $attempt = 0 ] || break
    log "QEMU crashed before the guest finished: once more with -accel ${accels[1]}"
  done
  if [ -n "$results" ] && [ -d "$work/out/results" ]; then
    mkdir -p "$results" && cp -a "$work/out/results/." "$results/"
  fi
  rc=$(cat "$work/out/rc" 2>/dev/null || echo 125)
  return "$rc"
}

case "${1:-}" in
  build) build ;;
  hash) inputs_hash ;;
  run) shift; run "$@" ;;
  *) echo "usage: scripts/cgroup2-guest.sh build | run CMD..." >&2; exit 2 ;;
esac
