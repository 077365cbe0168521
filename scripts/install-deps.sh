#!/usr/bin/env bash
# Installs what Corral needs on a Debian machine (as root): the runtimes and debootstrap.
# Idempotent and quiet when everything is there already.
set -euo pipefail
need=()
command -v runc >/dev/null 2>&1 || need+=(runc)
command -v runsc >/dev/null 2>&1 || need+=(runsc)
command -v debootstrap >/dev/null 2>&1 || need+=(debootstrap)
command -v python3 >/dev/null 2>&1 || need+=(python3)
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
if ! command -v dotnet >/dev/null 2>&1; then
  echo "corral: the .NET 10 SDK (dotnet) is required to build Corral" >&2
  exit 125
fi
