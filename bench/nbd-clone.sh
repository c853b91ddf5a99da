#!/usr/bin/env bash
# Latency during clones over NBD: fio's completion latency on an image served by `cowfish serve` while
# that image is cloned (whole file, range, volume snapshot) through the control socket, against fio alone
# in the same run; and the same on XFS (reflink=1, loop device) served by qemu-nbd during
# `cp --reflink=always`. Needs root (loop device, mount, drop_caches; may apt-get install fio, jq,
# qemu-utils, libnbd-bin, xfsprogs).
#
#   sudo bench/nbd-clone.sh                 # full run: 2^20 extents (8 GiB virtual, 4 GiB data), 20 s phases (~20 min on 2 loaded cores;
#                                         --extents 512K took 10.5 min)
#   sudo bench/nbd-clone.sh --quick         # smoke run: 64 K extents, 8 s phases (~2 min)
#   sudo bench/nbd-clone.sh --extents 256K  # another extent count (K and M are powers of 1024)
#
# Options: --quick, --extents N, --phase-seconds S, --no-xfs (skip the XFS comparison), --dir PARENT
# (scratch under PARENT instead of /var/tmp), --keep (leave the scratch directory), -h.
#
# The image: N extents of 4 KiB, one at every 8 KiB (N × 8 KiB virtual, half of it holes, so no two
# extents can merge). It is written once with `fio --rw=write:4k` (write 4 KiB, skip 4 KiB) into a
# file on the XFS scratch file system (or the scratch directory with --no-xfs), and `cowfish import`ed
# (import keeps holes), so both systems serve the same layout. Extents are counted on both sides:
# `nbdinfo --map` data ranges on the cowfish export, FIEMAP on the XFS file.
#
# Every phase runs one fio over NBD on the image being cloned:
#   fio --ioengine=nbd --rw=randrw --rwmixread=50 --bs=4k --iodepth=16 --numjobs=1 --time_based,
#   with a per-IO completion-latency log (--write_lat_log, --log_avg_msec=0, --log_unix_epoch=1).
# cowfish phases, one server, back to back: baseline (fio alone); control (`cowfish stat` through the
# control socket at the times the clone phases clone, to show what starting a cowfish process costs);
# whole-file clone (`cowfish cp` every 3 s from 5 s); range clone (`cowfish clone-range` of the whole
# file from 3 s; fio runs on until 3 s after it ends); snapshot (`cowfish snapshot --readonly` every 3 s).
# XFS phases: baseline, then `cp --reflink=always` of the image from 3 s (fio runs on until 3 s after).
# "During" figures keep every IO whose lifetime overlaps a clone command's run (the command's wall
# time as seen by the script, process start included).
set -euo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"
cmdline="bench/nbd-clone.sh $*"
quick=0; extents_arg=""; phase_s=""; xfs=1; parent=/var/tmp; keep=0

usage() { sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; }
die() { echo "nbd-clone.sh: $*" >&2; exit 1; }
# shellcheck source=common.sh
source "$here/bench/common.sh"
parse_count() { # 64K, 1M, 1000000 -> integer (K, M powers of 1024)
    case "$1" in
        *[Kk]) echo $((${1%[Kk]} * 1024)) ;;
        *[Mm]) echo $((${1%[Mm]} * 1024 * 1024)) ;;
        *) echo $(($1)) ;;
    esac
}

while (($#)); do
    case "$1" in
        --quick) quick=1 ;;
        --extents) extents_arg="${2:?--extents needs N}"; shift ;;
        --phase-seconds) phase_s="${2:?--phase-seconds needs S}"; shift ;;
        --no-xfs) xfs=0 ;;
        --dir) parent="${2:?--dir needs a directory}"; shift ;;
        --keep) keep=1 ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument '$1'" ;;
    esac
    shift
done

KiB=1024; MiB=$((1024 * KiB)); GiB=$((1024 * MiB))
if ((quick)); then extents_arg="${extents_arg:-64K}"; phase_s="${phase_s:-8}"
else extents_arg="${extents_arg:-1M}"; phase_s="${phase_s:-20}"; fi
[[ "$extents_arg" =~ ^[1-9][0-9]*[KkMm]?$ ]] || die "--extents takes a positive count (K, M suffixes allowed)"
[[ "$phase_s" =~ ^[1-9][0-9]*$ ]] && ((phase_s >= 6)) || die "--phase-seconds takes an integer ≥ 6"
extents=$(parse_count "$extents_arg")
virtual=$((extents * 8 * KiB)); data=$((extents * 4 * KiB))
# Clone events: the first at 5 s (2 s when phases are short), then every 3 s (1.5 s) while 2 s remain.
if ((phase_s >= 15)); then first_at=5; every=3; range_at=3; else first_at=2; every=1.5; range_at=2; fi

# ---------------------------------------------------------------------------------------------
# Prerequisites
[[ $EUID -eq 0 ]] || die "run as root (loop device, mount, /proc/sys/vm/drop_caches)"
tools=(fio:fio jq:jq nbdinfo:libnbd-bin qemu-nbd:qemu-utils qemu-img:qemu-utils)
((xfs)) && tools+=(mkfs.xfs:xfsprogs xfs_io:xfsprogs losetup:mount)
need_tools "${tools[@]}"
fio --enghelp=nbd >/dev/null 2>&1 || die "this fio has no nbd ioengine (Debian's fio package has it)"
build_cowfish

# ---------------------------------------------------------------------------------------------
# Scratch directory, servers, cleanup
scratch_parent "$parent"
# Peak disk use: the XFS file's data, the pool (about 1.4× the data at 4 KiB extents), fio's writes.
need=$((data * 3 + 2 * GiB)); ((xfs)) || need=$((data * 5 / 2 + 2 * GiB))
avail=$(($(df --output=avail -k "$parent" | tail -1) * KiB))
((avail > need)) || die "$parent has $((avail / MiB)) MiB free; this run needs about $((need / MiB)) MiB"
work="$(mktemp -d "$parent/cowfish-nbdclone.XXXXXX")"
mkdir -p "$work/logs" "$work/sock" "$work/fio" "$work/res"
pool="$work/pool"
loopdev=""; mnt="$work/xfs"
cow_pid=""; qemu_pid=""; fio_pid=""

stop_pid() { # PID: SIGTERM, then wait (cowfish makes acknowledged writes durable and exits 0)
    local pid="$1"
    [[ -n "$pid" ]] || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 600); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}
cleanup() {
    [[ -n "$fio_pid" ]] && { kill -INT "$fio_pid" 2>/dev/null || true; wait "$fio_pid" 2>/dev/null || true; }
    stop_pid "$qemu_pid"; qemu_pid=""
    stop_pid "$cow_pid"; cow_pid=""
    if mountpoint -q "$mnt" 2>/dev/null; then umount "$mnt" 2>/dev/null || umount -l "$mnt" || true; fi
    [[ -n "$loopdev" ]] && { losetup -d "$loopdev" 2>/dev/null || true; }
    if ((keep)); then echo "nbd-clone.sh: scratch directory kept: $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

log() { echo "[$(date +%H:%M:%S)] $*" >&2; }
now_ms() { date +%s%3N; }
sleep_until() { # EPOCH_MS
    local d=$(($1 - $(now_ms)))
    ((d > 0)) && sleep "$(awk -v d="$d" 'BEGIN { printf "%.3f", d / 1000 }')"
    return 0
}
cow_sock="$work/sock/cowfish"; qemu_sock="$work/sock/qemu"
cow_uri() { echo "nbd+unix:///vm/$1?socket=$cow_sock"; }
qemu_uri="nbd+unix:///?socket=$qemu_sock"
wait_ready() { # PID URI LOG
    for _ in $(seq 600); do
        nbdinfo --size "$2" >/dev/null 2>&1 && return 0
        kill -0 "$1" 2>/dev/null || break
        sleep 0.1
    done
    tail -20 "$3" >&2 || true
    die "server did not come up on $2"
}

# ---------------------------------------------------------------------------------------------
# The image
start_time=$(date +%s); start_utc="$(date -u '+%Y-%m-%d %H:%M UTC')"
load_start="$(cut -d' ' -f1-3 /proc/loadavg)"
log "scratch directory $work ($fstype, $(df -h --output=source,size,avail "$work" | tail -1 | xargs))"
log "$extents extents: $((virtual / MiB)) MiB virtual, $((data / MiB)) MiB of data"
if ((xfs)); then
    # Sparse backing file on the same disk; loop with direct I/O so the host page cache holds no
    # second copy (as bench/Cowfish.Bench files does). Room for the image, its clone's new writes, logs.
    truncate -s $((virtual + data + 2 * GiB)) "$work/xfs.img"
    loopdev="$(losetup --find --show --direct-io=on "$work/xfs.img")"
    mkfs.xfs -q -f -m reflink=1 "$loopdev" >"$work/logs/mkfs.log" 2>&1 || die "mkfs.xfs failed"
    mkdir -p "$mnt"; mount "$loopdev" "$mnt"
    src="$mnt/disk.raw"
else
    src="$work/disk.raw"
fi
# Size first: without it XFS's speculative preallocation turns the gaps into unwritten extents.
truncate -s "$virtual" "$src"
t0=$(now_ms)
fio --name=build --filename="$src" --rw=write:4k --bs=4k --size="$virtual" --ioengine=psync \
    --end_fsync=1 --output="$work/logs/build.out" >/dev/null 2>&1 || die "building the image with fio failed"
build_ms=$(($(now_ms) - t0))
log "wrote the image in $((build_ms / 1000)) s"
if ((xfs)); then
    xfs_extents=$(xfs_io -r -c fiemap "$src" | awk 'NR > 1 && !/hole/' | wc -l)
    log "XFS file: $xfs_extents extents (FIEMAP)"
fi
"${cowfish[@]}" mkfs "$pool" >/dev/null
"${cowfish[@]}" volume create "$pool" vm >/dev/null
t0=$(now_ms)
"${cowfish[@]}" import "$pool" "$src" vm/disk.img >"$work/logs/import.out" || die "cowfish import failed"
import_ms=$(($(now_ms) - t0))
log "imported into the pool in $((import_ms / 1000)) s"

# ---------------------------------------------------------------------------------------------
# Phases
prepare() { # FILES TO WARM...: flush everything, drop the page cache, read the files' data once
    sync
    echo 3 >/proc/sys/vm/drop_caches
    local f
    for f in "$@"; do nbdcopy "$f" null: || die "warming $f failed"; done
}
fio_start() { # NAME URI RUNTIME
    rm -f "$work/fio/$1".*
    fio --name="$1" --ioengine=nbd --uri="$2" --rw=randrw --rwmixread=50 --bs=4k --iodepth=16 \
        --numjobs=1 --time_based --runtime="$3" --output-format=json --output="$work/fio/$1.json" \
        --write_lat_log="$work/fio/$1" --log_avg_msec=0 --log_unix_epoch=1 \
        >"$work/logs/fio-$1.out" 2>&1 &
    fio_pid=$!
    phase_t0=$(now_ms)
}
fio_wait() { # NAME [STOP_AT_MS]: wait for fio (or interrupt it at STOP_AT_MS) and check its output
    if [[ -n "${2:-}" ]]; then sleep_until "$2"; kill -INT "$fio_pid" 2>/dev/null || true; fi
    wait "$fio_pid" 2>/dev/null || true
    fio_pid=""
    local j="$work/fio/$1.json"
    # On SIGINT fio prints "fio: terminating on signal 2" into the output file before the JSON.
    sed -n '/^{/,$p' "$j" >"$j.tmp" && mv "$j.tmp" "$j"
    [[ "$(jq '.jobs[0].error' "$j" 2>/dev/null)" == 0 ]] || { cat "$work/logs/fio-$1.out" >&2; die "fio $1 failed"; }
    rm -f "$work/fio/$1_lat.1.log" "$work/fio/$1_slat.1.log"
    : >>"$work/res/$1.windows"
}
timed() { # PHASE LABEL COMMAND...: run, record its wall-time window (epoch ms) and duration
    local p="$1" lbl="$2" a b; shift 2
    a=$(now_ms)
    "$@" >>"$work/logs/$p.cmd.out" 2>&1 || { tail -5 "$work/logs/$p.cmd.out" >&2; die "$lbl failed: $*"; }
    b=$(now_ms)
    echo "$a $b $lbl" >>"$work/res/$p.windows"
    log "  $p: $lbl took $((b - a)) ms"
}
events() { # PHASE LABEL_PREFIX COMMAND... (\$N in the command is replaced by the event number)
    local p="$1" pre="$2" t n=1; shift 2
    t=$first_at
    while awk -v t="$t" -v p="$phase_s" 'BEGIN { exit !(t <= p - 2) }'; do
        sleep_until $((phase_t0 + $(awk -v t="$t" 'BEGIN { printf "%d", t * 1000 }')))
        timed "$p" "$pre$n" "${@//\$N/$n}"
        n=$((n + 1)); t=$(awk -v t="$t" -v e="$every" 'BEGIN { print t + e }')
    done
}
settle() { sync; sleep 2; }

phases=()
declare -A pdesc=() psys=() pbase=()
run_fixed() { # PHASE SYSTEM BASELINE URI DESCRIPTION [EVENT ARGS...]
    local p="$1" sys="$2" base="$3" u="$4" d="$5"; shift 5
    phases+=("$p"); psys[$p]="$sys"; pbase[$p]="$base"; pdesc[$p]="$d"
    log "phase $p: $d"
    fio_start "$p" "$u" "$phase_s"
    (($#)) && events "$p" "$@"
    fio_wait "$p"
    settle
}
run_until_done() { # PHASE SYSTEM BASELINE URI DESCRIPTION LABEL COMMAND...: one command from range_at s; fio until 3 s after
    local p="$1" sys="$2" base="$3" u="$4" d="$5" lbl="$6"; shift 6
    phases+=("$p"); psys[$p]="$sys"; pbase[$p]="$base"; pdesc[$p]="$d"
    log "phase $p: $d"
    fio_start "$p" "$u" 3600
    sleep_until $((phase_t0 + range_at * 1000))
    timed "$p" "$lbl" "$@"
    local stop=$(($(now_ms) + 3000)) min=$((phase_t0 + phase_s * 1000))
    ((stop > min)) || stop=$min
    fio_wait "$p" "$stop"
    settle
}

log "starting cowfish serve"
cow_log="$work/logs/serve.log"
"${cowfish[@]}" serve "$pool" --socket "$cow_sock" >"$cow_log" 2>&1 &
cow_pid=$!
wait_ready "$cow_pid" "$(cow_uri disk.img)" "$cow_log"
# nbdinfo --map costs more than linear time on cowfish at large extent counts, so it gets a time limit.
t0=$(now_ms)
if cow_extents=$(set -o pipefail; timeout 90 nbdinfo --map "$(cow_uri disk.img)" | awk '$3 == 0' | wc -l); then
    map_note="$cow_extents data ranges (\`nbdinfo --map\`, $(($(now_ms) - t0)) ms)"
else
    cow_extents=$extents; map_note="not counted: \`nbdinfo --map\` took over 90 s"
fi
log "cowfish export: $map_note"
prepare "$pool"
fio --name=warmup --ioengine=nbd --uri="$(cow_uri disk.img)" --rw=randrw --bs=4k --iodepth=16 \
    --time_based --runtime=3 --output="$work/logs/warmup.out" >/dev/null 2>&1 || die "warm-up fio failed"
settle

U="$(cow_uri disk.img)"
run_fixed cow-base cowfish cow-base "$U" "fio alone"
run_fixed cow-ctl cowfish cow-base "$U" "control: \`cowfish stat POOL vm/disk.img\` (through the control socket) every ${every} s from ${first_at} s" \
    stat "${cowfish[@]}" stat "$pool" vm/disk.img
run_fixed cow-cp cowfish cow-base "$U" "whole-file clone: \`cowfish cp POOL vm/disk.img vm/cloneN.img\` every ${every} s from ${first_at} s" \
    cp "${cowfish[@]}" cp "$pool" vm/disk.img 'vm/clone$N.img'
run_until_done cow-range cowfish cow-base "$U" "range clone: \`cowfish clone-range POOL vm/disk.img 0 0 vm/range.img 0\` (the whole file) at ${range_at} s" \
    clone-range "${cowfish[@]}" clone-range "$pool" vm/disk.img 0 0 vm/range.img 0
run_fixed cow-snap cowfish cow-base "$U" "snapshot: \`cowfish snapshot POOL vm snapN --readonly\` every ${every} s from ${first_at} s" \
    snapshot "${cowfish[@]}" snapshot "$pool" vm 'snap$N' --readonly

# A clone taken with no load must read back as the source, byte for byte.
log "quiet clone and compare"
"${cowfish[@]}" cp "$pool" vm/disk.img vm/quiet.img >/dev/null
# Not qemu-img compare: its block-status queries (one extent each, to the end of the export) take
# time quadratic in the extent count on cowfish serve (see docs/benchmarks.md).
t0=$(now_ms)
if cmp -s <(nbdcopy "$(cow_uri disk.img)" -) <(nbdcopy "$(cow_uri quiet.img)" -); then compare="identical"
else compare="**DIFFERS**"; fi
compare="$compare ($(($(now_ms) - t0)) ms)"
log "quiet clone: $compare"
log "stopping cowfish serve (SIGTERM)"
stop_pid "$cow_pid"; cow_pid=""
log "checking the pool"
t0=$(now_ms)
check_out="$("${cowfish[@]}" check "$pool" 2>&1)" && check="clean: ${check_out##*clean: }" || check="FAULTS: $check_out"
check_ms=$(($(now_ms) - t0))
pool_bytes=$(stat -c %s "$pool")
rm -f "$pool"   # room for the XFS phases

if ((xfs)); then
    log "starting qemu-nbd on the XFS file"
    qemu-nbd -f raw -t -k "$qemu_sock" --shared=8 --cache=writeback --aio=threads "$src" \
        >"$work/logs/qemu-nbd.log" 2>&1 &
    qemu_pid=$!
    wait_ready "$qemu_pid" "$qemu_uri" "$work/logs/qemu-nbd.log"
    prepare "$src"
    fio --name=warmup --ioengine=nbd --uri="$qemu_uri" --rw=randrw --bs=4k --iodepth=16 \
        --time_based --runtime=3 --output="$work/logs/warmup-xfs.out" >/dev/null 2>&1 || die "warm-up fio (XFS) failed"
    settle
    run_fixed xfs-base xfs xfs-base "$qemu_uri" "fio alone"
    run_until_done xfs-clone xfs xfs-base "$qemu_uri" "\`cp --reflink=always disk.raw clone.raw\` (FICLONE) at ${range_at} s" \
        cp-reflink cp --reflink=always "$src" "$mnt/clone.raw"
    stop_pid "$qemu_pid"; qemu_pid=""
fi
end_time=$(date +%s)
load_end="$(cut -d' ' -f1-3 /proc/loadavg)"

# ---------------------------------------------------------------------------------------------
# Figures. Latencies in µs.
jget() { # PHASE DIR EXPR -> value or "null"
    jq -r ".jobs[0].$2 | $3" "$work/fio/$1.json"
}
p99()  { jget "$1" "$2" '.clat_ns.percentile["99.000000"] // null | if . == null then null else . / 1000 end'; }
p999() { jget "$1" "$2" '.clat_ns.percentile["99.900000"] // null | if . == null then null else . / 1000 end'; }
pmax() { jget "$1" "$2" 'if .total_ios > 0 then .clat_ns.max / 1000 else null end'; }
iops() { jget "$1" "$2" '.iops'; }
# From the per-IO log: IOs whose lifetime [end − clat, end] overlaps a command window ("in"), and the
# others ("out"). Prints: in_read_n in_read_p99 in_read_max in_write_n in_write_p99 in_write_max out_read_max out_write_max
window_stats() { # PHASE
    awk -v W="$work/res/$1.windows" '
        BEGIN { n = 0; while ((getline line < W) > 0) { split(line, f, " "); ws[n] = f[1]; we[n] = f[2]; n++ } }
        { t = $1 + 0; l = $2 / 1000; d = $3 + 0; s = t - l / 1000; hit = 0
          for (i = 0; i < n; i++) if (s <= we[i] && t >= ws[i]) { hit = 1; break }
          if (hit) print "in" d, l; else print "out" d, l }' "$work/fio/$1_clat.1.log" |
    sort -k1,1 -k2,2g | awk '
        { v[$1, ++c[$1]] = $2 }
        END {
            split("in0 in1", k, " ")
            for (j = 1; j <= 2; j++) { m = c[k[j]] + 0
                if (m == 0) printf "0 null null "
                else { i = int(m * 0.99); if (i < m * 0.99) i++; if (i < 1) i = 1; printf "%d %s %s ", m, v[k[j], i], v[k[j], m] } }
            for (j = 0; j <= 1; j++) { m = c["out" j] + 0; printf "%s ", (m ? v["out" j, m] : "null") }
            print "" }'
}
slowest() { # PHASE: the three slowest IOs, with when they ended (s after fio started) and whether in a window
    local t0; t0=$(head -1 "$work/fio/$1_clat.1.log" | cut -d, -f1)
    sort -t, -k2,2gr "$work/fio/$1_clat.1.log" | head -3 | awk -F', *' -v t0="$t0" -v W="$work/res/$1.windows" '
        BEGIN { n = 0; while ((getline line < W) > 0) { split(line, f, " "); ws[n] = f[1]; we[n] = f[2]; lb[n] = f[3]; n++ } }
        { t = $1 + 0; l = $2 / 1e6; s = t - l; where = ""
          for (i = 0; i < n; i++) if (s <= we[i] && t >= ws[i]) { where = " during " lb[i]; break }
          printf "%s%.1f ms %s ending at %.2f s%s", (NR > 1 ? "; " : ""), l, ($3 == 0 ? "read" : "write"), (t - t0) / 1000, where }'
}
fmt() { # µs -> text
    [[ "$1" == null || -z "$1" ]] && { echo "—"; return; }
    awk -v v="$1" 'BEGIN { if (v >= 1e6) printf "%.2f s", v / 1e6; else if (v >= 1000) printf "%.2f ms", v / 1000; else printf "%.0f µs", v }'
}
fmt_iops() { awk -v v="$1" 'BEGIN { if (v >= 1000) printf "%.1f K", v / 1000; else printf "%.0f", v }'; }
ratio() { # A B -> A/B
    [[ "$1" == null || "$2" == null || -z "$1" || -z "$2" ]] && { echo "—"; return; }
    awk -v a="$1" -v b="$2" 'BEGIN { r = a / b; if (r >= 100) printf "%.0f×", r; else printf "%.2f×", r }'
}
mark() { # VALUE LIMIT -> "met" / "**missed**" / ""
    [[ "$1" == null || -z "$1" ]] && { echo ""; return; }
    awk -v v="$1" -v t="$2" 'BEGIN { print (v <= t) ? "met" : "**missed**" }'
}
durations() { # PHASE -> "n × median (min–max)"
    awk '{ print $2 - $1 }' "$work/res/$1.windows" | sort -n | awk '
        { v[++n] = $1 } END { if (n == 0) { print "—"; exit }
          med = (n % 2) ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
          f = "%.2f s"
          if (n == 1) printf f, v[1] / 1000; else printf "%d × median " f " (" f "–" f ")", n, med / 1000, v[1] / 1000, v[n] / 1000 }'
}
declare -A label=([cow-base]="cowfish: baseline" [cow-ctl]="cowfish: control (\`stat\`)" [cow-cp]="cowfish: whole-file clone (\`cp\`)"
                  [cow-range]="cowfish: range clone (\`clone-range\`)" [cow-snap]="cowfish: snapshot"
                  [xfs-base]="XFS: baseline" [xfs-clone]="XFS: \`cp --reflink=always\`")

mkdir -p "$here/bench/results"
report="$here/bench/results/nbd-clone-$(date -u +%Y%m%d-%H%M%S).md"
{
    echo "## Latency during clones over NBD"
    echo
    echo "- date: $start_utc; the whole script took $((SECONDS / 60)) min $((SECONDS % 60)) s (image built in $((build_ms / 1000)) s, imported in $((import_ms / 1000)) s)"
    echo "- cowfish: engine commit $commit: \"$subject\", Release build"
    echo "- command: \`$cmdline\` (as root)"
    echo "- machine: $(nproc) CPUs, $(awk '/MemTotal/ { printf "%.0f GB", $2 / 1e6 }' /proc/meminfo) RAM, kernel $(uname -r); scratch on $fstype ($(df --output=source "$work" | tail -1)); load average $load_start at the start, $load_end at the end"
    echo "- clients: $(fio --version), $(nbdinfo --version | head -1); XFS server: $(qemu-nbd --version | head -1)"
    echo "- image: $extents extents of 4 KiB at an 8 KiB stride ($((virtual / MiB)) MiB virtual, $((data / MiB)) MiB data); cowfish export: $map_note$( ((xfs)) && echo "; XFS file: $xfs_extents extents (FIEMAP)")"
    echo "- fio per phase: \`fio --ioengine=nbd --uri=URI --rw=randrw --rwmixread=50 --bs=4k --iodepth=16 --numjobs=1 --time_based --runtime=$phase_s\` (range clone and XFS clone phases: until 3 s after the clone), per-IO clat log"
    echo "- cowfish pool after the run: $(awk -v b="$pool_bytes" 'BEGIN { printf "%.2f GB", b / 1e9 }'); a clone taken with no load compared with its source (\`cmp\` of two \`nbdcopy URI -\` streams): $compare; server stopped with SIGTERM, then \`cowfish check\` ($((check_ms)) ms): $check"
    echo
    echo "Whole phase (fio's own percentiles over every IO of the phase). Ratios: p99 ÷ the same system's baseline p99 (target ≤ 2×)."
    echo
    echo "| phase | clone command (wall time, process start included) | read IOPS | write IOPS | read p99 | read p99.9 | read max | write p99 | write p99.9 | write max | read p99 ÷ base | write p99 ÷ base |"
    echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
    for p in "${phases[@]}"; do
        b="${pbase[$p]}"
        echo "| ${label[$p]} | $(durations "$p") | $(fmt_iops "$(iops "$p" read)") | $(fmt_iops "$(iops "$p" write)") | $(fmt "$(p99 "$p" read)") | $(fmt "$(p999 "$p" read)") | $(fmt "$(pmax "$p" read)") | $(fmt "$(p99 "$p" write)") | $(fmt "$(p999 "$p" write)") | $(fmt "$(pmax "$p" write)") | $(ratio "$(p99 "$p" read)" "$(p99 "$b" read)") | $(ratio "$(p99 "$p" write)" "$(p99 "$b" write)") |"
    done
    echo
    echo "During the commands only: IOs whose lifetime overlaps a command's run (from the per-IO log; the window is the command's wall time as the script saw it, process start included). Target: worst ≤ 10 ms and p99 ≤ 2× the baseline p99. \"Worst outside\" is the slowest IO of the same phase that overlaps no command."
    echo
    echo "| phase | reads during (n) | read p99 during | ÷ base p99 | read worst during | writes during (n) | write p99 during | ÷ base p99 | write worst during | worst ≤ 10 ms | p99 ≤ 2× | worst outside (read / write) |"
    echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
    for p in "${phases[@]}"; do
        [[ "$p" == *base ]] && continue
        b="${pbase[$p]}"
        read -r rn rp rm wn wp wm orm owm < <(window_stats "$p")
        worst=$(awk -v a="$rm" -v b="$wm" 'BEGIN { if (a == "null") a = 0; if (b == "null") b = 0; print (a > b) ? a : b }')
        r1=$(awk -v a="$rp" -v b="$(p99 "$b" read)" 'BEGIN { print (a == "null") ? 0 : a / b }')
        r2=$(awk -v a="$wp" -v b="$(p99 "$b" write)" 'BEGIN { print (a == "null") ? 0 : a / b }')
        both=$(awk -v a="$r1" -v b="$r2" 'BEGIN { print (a > b) ? a : b }')
        echo "| ${label[$p]} | $rn | $(fmt "$rp") | $(ratio "$rp" "$(p99 "$b" read)") | $(fmt "$rm") | $wn | $(fmt "$wp") | $(ratio "$wp" "$(p99 "$b" write)") | $(fmt "$wm") | $(mark "$worst" 10000) | $(mark "$both" 2) | $(fmt "$orm") / $(fmt "$owm") |"
    done
    echo
    echo "The three slowest IOs of each phase (time after fio's first completion):"
    echo
    for p in "${phases[@]}"; do echo "- ${label[$p]}: $(slowest "$p")"; done
    echo
    range_ms=$(awk '{ print $2 - $1 }' "$work/res/cow-range.windows")
    echo "Range clone of $cow_extents extents under load: $(awk -v ms="$range_ms" -v n="$cow_extents" 'BEGIN { printf "%.2f s, %.1f K extents/s", ms / 1000, n / ms }')."
    if ((xfs)); then
        x_ms=$(awk '{ print $2 - $1 }' "$work/res/xfs-clone.windows")
        echo "XFS \`cp --reflink=always\` of $xfs_extents extents under load: $(awk -v ms="$x_ms" -v n="$xfs_extents" 'BEGIN { printf "%.2f s, %.1f K extents/s", ms / 1000, n / ms }')."
    fi
    echo
    echo "Method: one \`cowfish serve POOL --socket SOCK\` for all cowfish phases, back to back, on the same export \`vm/disk.img\`, so the clone phases run on a file that already shares its extents with earlier clones (as a VM's disk does after its first snapshot); the baseline runs first, on the unshared file. Clone commands go through the control socket POOL.ctl. XFS: \`mkfs.xfs -m reflink=1\` on a loop device (\`losetup --direct-io=on\`) over a sparse file in the scratch directory; \`qemu-nbd -f raw -t -k SOCK --shared=8 --cache=writeback --aio=threads FILE\` (its defaults, spelt out). Before each system's phases: sync, drop the page cache, read its data once, and an untimed 3 s fio warm-up; between phases: sync and 2 s of rest."
} >"$report"

cat "$report"
log "report saved as $report; total $((end_time - start_time)) s"
