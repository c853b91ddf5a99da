#!/usr/bin/env bash
# Builds cowfish, then walks through what a VM fleet does with it: import a sparse disk image,
# snapshot the volume, reflink-clone the image, write into the clone, see the space sharing,
# export and compare, and check the pool.
set -euo pipefail
cd "$(dirname "$0")/.."
dotnet build src/Cowfish.Cli -c Release -nologo -v quiet >/dev/null
cowfish() { echo "+ cowfish $*" >&2; dotnet src/Cowfish.Cli/bin/Release/net10.0/Cowfish.Cli.dll "$@"; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
pool="$work/demo.pool"

# A 64 MiB sparse "disk image" with 8 MiB of data in two places.
truncate -s 64M "$work/disk.img"
head -c 4M /dev/urandom | dd of="$work/disk.img" conv=notrunc status=none
head -c 4M /dev/urandom | dd of="$work/disk.img" bs=1M seek=40 conv=notrunc status=none

cowfish mkfs "$pool"
cowfish volume create "$pool" vms
cowfish import "$pool" "$work/disk.img" vms/base.img
cowfish snapshot "$pool" vms vms@monday --readonly
cowfish cp "$pool" vms/base.img vms/clone.img
printf 'written into the clone only' | cowfish write "$pool" vms/clone.img 1M
cowfish ls "$pool" vms
cowfish du "$pool" vms/clone.img
cowfish du "$pool" vms
cowfish export "$pool" vms@monday/base.img "$work/out.img"
cmp "$work/disk.img" "$work/out.img" && echo "exported snapshot equals the original image" >&2
cowfish info "$pool"
cowfish check "$pool"
