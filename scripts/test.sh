#!/usr/bin/env bash
# Installs what the tests need, builds, and runs the default test run (stress tests excluded:
# run them with  dotnet test -c Release --filter Category=Stress).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v dotnet >/dev/null 2>&1; then
  echo "the .NET 10 SDK is required (dotnet on PATH)" >&2
  exit 1
fi
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
dotnet test Cowfish.slnx -c Release --nologo --filter "Category!=Stress" \
  --logger "console;verbosity=normal" -- RunConfiguration.TestSessionTimeout=1500000 2>&1 | tee "$log" || status=$?
passed=$(grep -E '^\s+Passed: [0-9]+' "$log" | tail -1 | grep -oE '[0-9]+' || echo 0)
failed=$(grep -E '^\s+Failed: [0-9]+' "$log" | tail -1 | grep -oE '[0-9]+' || echo 0)
echo "${passed} passed, ${failed} failed"
exit $status
