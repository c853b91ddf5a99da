#!/usr/bin/env bash
# Installs what the tests need, builds, and runs the default test run (stress tests excluded:
# run them with  dotnet test -c Release --filter Category=Stress).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v dotnet >/dev/null 2>&1; then
  echo "the .NET 10 SDK is required (dotnet on PATH)" >&2
  exit 1
fi
# The NBD tests drive real clients: qemu-img (qemu-utils), nbdinfo and nbdcopy (libnbd-bin), fio,
# and libnbd's Python binding (python3-libnbd) for the stdio interop test. CI starts from a fresh
# Debian machine, so install whatever is missing (as root, quietly).
need=()
for tool in qemu-img:qemu-utils nbdinfo:libnbd-bin nbdcopy:libnbd-bin fio:fio; do
  command -v "${tool%%:*}" >/dev/null 2>&1 || need+=("${tool#*:}")
done
/usr/bin/python3 -c 'import nbd' >/dev/null 2>&1 || need+=(python3-libnbd)
if [ ${#need[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "installing NBD test clients: $(printf '%s\n' "${need[@]}" | sort -u | tr '\n' ' ')"
  $sudo apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq $(printf '%s\n' "${need[@]}" | sort -u) >/dev/null
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
