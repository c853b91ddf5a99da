#!/usr/bin/env bash
# Builds cowfish, then walks through what a VM fleet does with it: import a sparse disk image,
# snapshot the volume, reflink-clone the image, write into the clone, see the space sharing,
# export and compare; then serve the pool over NBD, write into a disk with qemu-img while it is
# served, snapshot it live through the server, stop the server, and check the pool.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v qemu-img >/dev/null || ! command -v nbdinfo >/dev/null; then
  echo "+ installing qemu-utils and libnbd-bin (the NBD clients)" >&2
  sudo_=""; [ "$(id -u)" -ne 0 ] && sudo_=sudo
  $sudo_ apt-get update -qq >/dev/null && $sudo_ apt-get install -y -qq qemu-utils libnbd-bin >/dev/null
fi
dotnet build src/Cowfish.Cli -c Release -nologo -v quiet >/dev/null
cowfish() { echo "+ cowfish $*" >&2; dotnet src/Cowfish.Cli/bin/Release/net10.0/Cowfish.Cli.dll "$@"; }
work=$(mktemp -d)
server=""
trap '[ -n "$server" ] && kill "$server" 2>/dev/null; rm -rf "$work"' EXIT
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

# Serve the pool over NBD; while it runs, every other cowfish command goes through the server.
sock="$work/nbd.sock"
echo "+ cowfish serve $pool --socket $sock &" >&2
dotnet src/Cowfish.Cli/bin/Release/net10.0/Cowfish.Cli.dll serve "$pool" --socket "$sock" 2>"$work/serve.log" &
server=$!
for _ in $(seq 100); do [ -S "$sock" ] && [ -S "$pool.ctl" ] && break; sleep 0.1; done
echo "+ qemu-img info nbd+unix:///vms/clone.img?socket=$sock" >&2
qemu-img info "nbd+unix:///vms/clone.img?socket=$sock"
echo "+ qemu-img convert (write the original image into the served clone)" >&2
qemu-img convert -n -f raw -O raw "$work/disk.img" "nbd+unix:///vms/clone.img?socket=$sock"
cowfish snapshot "$pool" vms vms@live --readonly     # runs inside the server
echo "+ nbdinfo --map nbd+unix:///vms@live/clone.img?socket=$sock" >&2
nbdinfo --map "nbd+unix:///vms@live/clone.img?socket=$sock"
qemu-img compare -f raw -F raw "$work/disk.img" "nbd+unix:///vms@live/clone.img?socket=$sock"
cowfish volume list "$pool"
kill -TERM "$server"; wait "$server"; server=""
echo "+ the server stopped (its log: one line per connection)" >&2
cat "$work/serve.log" >&2
cowfish check "$pool"
