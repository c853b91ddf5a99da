#!/usr/bin/env bash
# The recipe of the v1 golden images (run once, by the code of commit 985eda1; kept as a record).
set -euo pipefail
C=${COWFISH:-scripts/cowfish}; P=pool.v1
python3 - <<'PY'
def blocks(name, idx): return (f"{name} block {idx} " * 400).encode()[:4096]
with open("sparse.raw", "wb") as f:
    for i in range(1000): f.seek(i * 8192); f.write(blocks("sparse", i))
    f.truncate(1000 * 8192)
with open("dense.raw", "wb") as f:
    for i in range(64): f.write(blocks("dense", i))
open("small.txt", "wb").write(b"hello from a v1 pool\n")
with open("patch.raw", "wb") as f:
    for i in range(3): f.write(blocks("patch", i))
PY
$C mkfs $P; $C volume create $P vm; $C import $P sparse.raw vm/sparse.img; $C import $P dense.raw vm/dense.img
$C mkdir $P vm/dir/sub -p; for i in $(seq 1 300); do echo "file $i" | $C write $P vm/dir/sub/f$i 0; done
$C write $P vm/small.txt 0 < small.txt
$C snapshot $P vm vm@1 --readonly
$C cp $P vm/sparse.img vm/sparse-clone.img
$C write $P vm/sparse-clone.img 40960 < patch.raw
$C truncate $P vm/dense.img 1048576
$C clone-range $P vm/dense.img 0 65536 vm/dense.img 524288
$C rm $P vm/dir/sub/f7; $C mv $P vm/dir/sub/f8 vm/dir/moved
$C punch $P vm/sparse.img 81920 16384
$C snapshot $P vm vm@2 --readonly
$C send $P vm@1 -o full.stream; $C send $P vm@2 --parent vm@1 -o incr.stream
$C check $P
for f in sparse.img dense.img sparse-clone.img small.txt dir/moved dir/sub/f300; do for v in vm vm@1 vm@2; do
  $C export $P $v/$f out.tmp >/dev/null 2>&1 && echo "$v/$f $(sha256sum < out.tmp | cut -c1-64) $(stat -c %s out.tmp)"; done; done > manifest.txt
rm -f out.tmp
for f in pool.v1 full.stream incr.stream; do gzip -9 -c $f > $f.gz; done
