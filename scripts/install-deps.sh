#!/usr/bin/env bash
# Installs what Corral needs on a Debian machine (as root): the runtimes and debootstrap, and on a
# hybrid cgroup host lets crun run (below). Idempotent and quiet when everything is there already.
set -euo pipefail
need=()
command -v runc >/dev/null 2>&1 || need+=(runc)
command -v runsc >/dev/null 2>&1 || need+=(runsc)
command -v crun >/dev/null 2>&1 || need+=(crun)
command -v debootstrap >/dev/null 2>&1 || need+=(debootstrap)
command -v python3 >/dev/null 2>&1 || need+=(python3)
# --network bridge: the namespace, veth and bridge (ip) and Corral's firewall table (nft).
command -v ip >/dev/null 2>&1 || [ -x /usr/sbin/ip ] || [ -x /sbin/ip ] || need+=(iproute2)
command -v nft >/dev/null 2>&1 || [ -x /usr/sbin/nft ] || need+=(nftables)
# --disk: an ext4 filesystem per container (mkfs.ext4), loop-mounted (mount -o loop).
command -v mkfs.ext4 >/dev/null 2>&1 || [ -x /usr/sbin/mkfs.ext4 ] || [ -x /sbin/mkfs.ext4 ] || need+=(e2fsprogs)
command -v mount >/dev/null 2>&1 || [ -x /usr/bin/mount ] || [ -x /bin/mount ] || need+=(mount)
for extra in "$@"; do
  case "$extra" in
    podman) command -v podman >/dev/null 2>&1 || need+=(podman) ;;
    *) dpkg -s "$extra" >/dev/null 2>&1 || need+=("$extra") ;;
  esac
done
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "corral: missing ${need[*]}; run as root so they can be installed" >&2
    exit 125
  fi
  echo "corral: installing ${need[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends "${need[@]}" >&2
fi
# crun refuses a hybrid cgroup host (v1 hierarchies under a tmpfs /sys/fs/cgroup, cgroup2 at
# /sys/fs/cgroup/unified) while any controller is attached to the v2 hierarchy ("cgroups in hybrid
# mode not supported"): typically one no v1 hierarchy took, such as hugetlb. A v1 hierarchy of its
# own detaches it from v2 (what `corral setup-crun` does too); runc and runsc do not mind either way.
unified=/sys/fs/cgroup/unified
attached="$(cat "$unified/cgroup.controllers" 2>/dev/null || true)"
if [ "$(id -u)" = 0 ] && [ -n "$attached" ] && [ "$(stat -f -c %T /sys/fs/cgroup 2>/dev/null)" = tmpfs ]; then
  for controller in $attached; do
    case "$controller" in *[!a-z0-9_]*) continue ;; esac
    if mkdir -p "/sys/fs/cgroup/$controller" && mount -t cgroup -o "$controller" cgroup "/sys/fs/cgroup/$controller"; then
      echo "corral: mounted a cgroup v1 $controller hierarchy at /sys/fs/cgroup/$controller so that crun can run on this hybrid cgroup host" >&2
    else
      echo "corral: warning: could not detach $controller from $unified; crun will refuse to run here (runc and runsc are unaffected)" >&2
    fi
  done
fi
if ! command -v dotnet >/dev/null 2>&1; then
  echo "corral: the .NET 10 SDK (dotnet) is required to build Corral" >&2
  exit 125
fi
