#!/usr/bin/env bash
# Installs Corral's systemd unit: contrib/systemd/corral.service with this checkout's ./corral, into
# /etc/systemd/system (or --dest DIR), then `systemctl daemon-reload` when systemd runs.
#   scripts/install-service.sh [--dest DIR] [--no-reload] [-- SERVE OPTIONS...]
# e.g. scripts/install-service.sh -- --metrics-listen 127.0.0.1:9464
# then: systemctl enable --now corral; journalctl -u corral -f
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest=/etc/systemd/system
reload=1
while [ $# -gt 0 ]; do
  case "$1" in
    --dest) dest="$2"; shift 2 ;;
    --no-reload) reload=0; shift ;;
    --) shift; break ;;
    *) echo "install-service.sh: unknown option '$1' (--dest DIR, --no-reload, -- SERVE OPTIONS)" >&2; exit 125 ;;
  esac
done
args=""
for a in "$@"; do
  case "$a" in
    *[!A-Za-z0-9_./:=@+,-]*) echo "install-service.sh: serve option '$a' has characters a unit line cannot take as is" >&2; exit 125 ;;
  esac
  args+=" $a"
done
mkdir -p "$dest"
tmp="$(mktemp "$dest/.corral.service.XXXXXX")"
sed -e "s|@CORRAL@|$here/corral|" -e "s|@ARGS@|${args# }|" -e 's| *$||' "$here/contrib/systemd/corral.service" > "$tmp"
chmod 0644 "$tmp"
mv "$tmp" "$dest/corral.service"
echo "installed $dest/corral.service"
if [ "$reload" = 1 ]; then
  if [ -d /run/systemd/system ]; then
    systemctl daemon-reload
    echo "systemctl daemon-reload done; start it with: systemctl enable --now corral"
  else
    echo "systemd is not running here: no daemon-reload (the unit is in place for the next boot)" >&2
  fi
fi
