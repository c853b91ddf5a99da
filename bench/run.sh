#!/usr/bin/env bash
# Builds and runs the Cowfish benchmarks (Release). Arguments go to the benchmark program:
#   bench/run.sh all            # full run, ~2-3 minutes on 2 cores
#   bench/run.sh all --quick    # smaller sizes, a few seconds
#   bench/run.sh clone --clone-max-exp 8
#   sudo bench/run.sh files     # files layer vs XFS/btrfs on loop devices and fio; needs root, ~11 minutes
#   sudo bench/run.sh files --quick   # the same up to 10^4 extents and 256 MiB files, ~1.5 minutes
# The markdown report is printed and also saved under bench/results/ (gitignored).
set -euo pipefail
cd "$(dirname "$0")/.."
exec dotnet run -c Release --project bench/Cowfish.Bench -- "$@"
