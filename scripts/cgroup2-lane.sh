#!/usr/bin/env bash
# The cgroup v2 lane's body, run on a pure cgroup v2 host or inside scripts/cgroup2-guest.sh:
# the integration tests with the trait Lane=cgroup2 (xunit XML to RESULTS/cgroup2.xml), then the OOM
# detection latency bench (kernel kill from /dev/kmsg to Corral's event) to RESULTS/cgroup2-oom-latency.md.
#   scripts/cgroup2-lane.sh RESULTS [xunit runner options...]
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
results=$1; shift
export CORRAL_CGROUP2_LANE=1 DOTNET_NOLOGO=1 DOTNET_CLI_TELEMETRY_OPTOUT=1
echo "cgroup v2 lane: kernel $(uname -r), $(nproc) CPUs, controllers: $(cat /sys/fs/cgroup/cgroup.controllers)"
started=$SECONDS
# One test at a time: under software emulation on a shared 2-core host, parallel classes only time out.
test/Corral.IntegrationTests/bin/Release/net10.0/Corral.IntegrationTests -trait Lane=cgroup2 -parallelMode none -result-xml "$results/cgroup2.xml" "$@"
rc=$?
echo "cgroup v2 lane: tests took $((SECONDS - started)) s"
if dotnet bench/OomLatency/bin/Release/net10.0/OomLatency.dll "${CORRAL_LANE_OOM_KILLS:-20}" >"$results/cgroup2-oom-latency.md"; then
  cat "$results/cgroup2-oom-latency.md"
else
  echo "cgroup v2 lane: the OOM latency bench failed"
  rc=1
fi
exit $rc
