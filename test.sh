#!/usr/bin/env bash
# Sets up what the tests need (runtimes, the default image, the build), runs every test, and ends
# with the line "N passed, N failed".
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1 DOTNET_SKIP_FIRST_TIME_EXPERIENCE=1
results="$here/.build/test-results"
rm -rf "$results" && mkdir -p "$results"

# The image tests need a local registry and skopeo to push to it (umoci for manual layouts).
scripts/install-deps.sh docker-registry skopeo umoci || exit 1
./corral prepare >/dev/null || { echo "0 passed, 1 failed"; exit 1; }
dotnet build Corral.slnx -c Release --nologo -v q || { echo "0 passed, 1 failed"; exit 1; }

status=0
for project in Corral.Tests Corral.IntegrationTests; do
  echo "== $project"
  "test/$project/bin/Release/net10.0/$project" -result-xml "$results/$project.xml" "$@" || status=1
done

python3 - "$results" <<'PY'
import glob, sys, xml.etree.ElementTree as ET
passed = failed = skipped = 0
for f in glob.glob(sys.argv[1] + "/*.xml"):
    for a in ET.parse(f).getroot().iter("assembly"):
        passed += int(a.get("passed", 0)); failed += int(a.get("failed", 0)) + int(a.get("errors", 0))
        skipped += int(a.get("skipped", 0)) + int(a.get("not-run", 0))
print(f"{passed} passed, {failed} failed" + (f", {skipped} skipped" if skipped else ""))
PY
exit $status
