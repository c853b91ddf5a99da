#!/usr/bin/env bash
# Installs what the tests need, builds, and runs the default test run (stress tests excluded:
# run them with  dotnet test -c Release --filter Category=Stress).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v dotnet >/dev/null 2>&1; then
  echo "the .NET 10 SDK is required (dotnet on PATH)" >&2
  exit 1
fi
dotnet test Cowfish.slnx -c Release --nologo --filter "Category!=Stress" \
  --logger "console;verbosity=normal" -- RunConfiguration.TestSessionTimeout=1500000
