#!/usr/bin/env bash
# Builds cowfish, creates a pool, writes to it through the command line, and checks it.
set -euo pipefail
cd "$(dirname "$0")/.."
dotnet build src/Cowfish.Cli -c Release -nologo -v quiet >/dev/null
cowfish() { dotnet src/Cowfish.Cli/bin/Release/net10.0/Cowfish.Cli.dll "$@"; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
pool="$work/demo.pool"
set -x
cowfish mkfs "$pool"
tree=$(cowfish tree create "$pool")
for i in 1 2 3; do cowfish tree put "$pool" "$tree" "vm-$i" "disk image $i"; done
clone=$(cowfish tree clone "$pool" "$tree")
cowfish tree put "$pool" "$clone" "vm-2" "changed in the clone only"
cowfish tree scan "$pool" "$tree"
cowfish tree scan "$pool" "$clone"
cowfish info "$pool"
cowfish check "$pool"
