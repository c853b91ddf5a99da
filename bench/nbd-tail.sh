#!/usr/bin/env bash
# Tail latency over NBD with nothing else running: fio 4 KiB randrw and randwrite at qd16 on an
# image served by `cowfish serve`, against qemu-nbd serving a raw file on the same disk, in one run.
# Needs root (drops the page cache; may apt-get install fio, jq, qemu-utils, libnbd-bin).
#
#   sudo bench/nbd-tail.sh              # 1 GiB images, 3 rounds of 10 s per workload and server (~3 min)
#   sudo bench/nbd-tail.sh --quick      # 256 MiB, 1 round of 5 s (~40 s)
#
# Options: --quick, --rounds N, --fio-runtime SECONDS, --dir PARENT, --keep, -h.
#
# Both servers start from the same random 1 GiB image (qemu-nbd: a raw file, --cache=writeback
# --aio=threads, its defaults; cowfish: the image imported into a pool). Each round runs, for each
# workload, each server in turn (the order rotates), after sync + drop_caches + a warming read of
# the server's file, and an untimed 3 s fio randrw on it (so that cowfish's JIT has compiled its
# write path, as a long-running server has). fio: --ioengine=nbd --bs=4k --iodepth=16 --numjobs=1 --time_based, no flushes
# (both servers run with a write-back cache). The report gives, per workload, the median over
# rounds of IOPS, p99.9 and max completion latency of every IO (reads and writes together for
# randrw), and the ratio cowfish / qemu-nbd of each; the targets are p99.9 <= 1.0x, max <= 1.5x,
# IOPS >= 1.0x.
set -euo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"
cmdline="bench/nbd-tail.sh $*"
quick=0; rounds=""; fio_runtime=""; parent=/var/tmp; keep=0

usage() { sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; }
die() { echo "nbd-tail.sh: $*" >&2; exit 1; }
# shellcheck source=common.sh
source "$here/bench/common.sh"

while (($#)); do
    case "$1" in
        --quick) quick=1 ;;
        --rounds) rounds="${2:?--rounds needs N}"; shift ;;
        --fio-runtime) fio_runtime="${2:?--fio-runtime needs SECONDS}"; shift ;;
        --dir) parent="${2:?--dir needs a directory}"; shift ;;
        --keep) keep=1 ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument '$1'" ;;
    esac
    shift
done

MiB=$((1024 * 1024))
if ((quick)); then img_size=$((256 * MiB)); rounds="${rounds:-1}"; fio_runtime="${fio_runtime:-5}"
else img_size=$((1024 * MiB)); rounds="${rounds:-3}"; fio_runtime="${fio_runtime:-10}"; fi
[[ "$rounds" =~ ^[1-9][0-9]*$ ]] || die "--rounds takes a positive integer"
[[ "$fio_runtime" =~ ^[1-9][0-9]*$ ]] || die "--fio-runtime takes a positive integer"

[[ $EUID -eq 0 ]] || die "run as root (it drops the page cache with /proc/sys/vm/drop_caches)"
need_tools qemu-nbd:qemu-utils nbdcopy:libnbd-bin nbdinfo:libnbd-bin fio:fio jq:jq
fio --enghelp=nbd >/dev/null 2>&1 || die "this fio has no nbd ioengine (Debian's fio package has it)"
build_cowfish

scratch_parent "$parent"
work="$(mktemp -d "$parent/cowfish-tail.XXXXXX")"
mkdir -p "$work/logs" "$work/results"
trap 'servers_cleanup nbd-tail.sh' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
log() { echo "[$(date +%H:%M:%S)] $*" >&2; }

raw="$work/disk.raw"; pool="$work/pool"
declare -A label=([raw]="qemu-nbd, raw file" [cowfish]="cowfish serve")
uri() { case "$1" in raw) echo "nbd+unix:///?socket=$work/raw.sock" ;;
                     cowfish) echo "nbd+unix:///vm/disk.img?socket=$work/cowfish.sock" ;; esac; }
file_of() { case "$1" in raw) echo "$raw" ;; cowfish) echo "$pool" ;; esac; }

start_server() { # SERVER
    case "$1" in
        raw) qemu-nbd -f raw -t -k "$work/raw.sock" --shared=8 --cache=writeback --aio=threads "$raw" \
                 >>"$work/logs/raw.log" 2>&1 & ;;
        cowfish) "${cowfish[@]}" serve "$pool" --socket "$work/cowfish.sock" >>"$work/logs/cowfish.log" 2>&1 & ;;
    esac
    server_pid[$1]=$!
    for _ in $(seq 300); do
        nbdinfo --size "$(uri "$1")" >/dev/null 2>&1 && return 0
        kill -0 "${server_pid[$1]}" 2>/dev/null || break
        sleep 0.1
    done
    tail -20 "$work/logs/$1.log" >&2 || true
    die "server $1 did not come up"
}

log "scratch directory $work ($fstype); making a $((img_size / MiB)) MiB random image"
head -c "$img_size" /dev/urandom >"$raw"
"${cowfish[@]}" mkfs "$pool" >/dev/null
"${cowfish[@]}" volume create "$pool" vm >/dev/null
"${cowfish[@]}" import "$pool" "$raw" vm/disk.img >/dev/null

fio_run() { # WORKLOAD SERVER
    local w="$1" s="$2" out="$work/logs/fio.json"
    fio --name="$w" --ioengine=nbd --uri="$(uri "$s")" --rw="$w" --bs=4k --iodepth=16 --numjobs=1 \
        --time_based --runtime="$fio_runtime" --percentile_list=99.9 --output-format=json --output="$out" \
        >"$work/logs/last.out" 2>&1 || { cat "$work/logs/last.out" >&2; die "fio $w on ${label[$s]} failed"; }
    [[ "$(jq '.jobs[0].error' "$out")" == 0 ]] || die "fio $w on ${label[$s]} reported an error"
    # One latency figure over every IO: the worse of the read and write sides (the side with no IO
    # reports zeros).
    jq -r '.jobs[0] | [(.read.iops + .write.iops),
        ([.read.clat_ns.percentile["99.900000"] // 0, .write.clat_ns.percentile["99.900000"] // 0] | max / 1000),
        ([.read.clat_ns.max, .write.clat_ns.max] | max / 1000)] | @tsv' "$out"
}

servers=(raw cowfish)
for ((r = 0; r < rounds; r++)); do
    for w in randrw randwrite; do
        order=("${servers[@]}"); ((r % 2)) && order=(cowfish raw)
        for s in "${order[@]}"; do
            sync; echo 3 >/proc/sys/vm/drop_caches
            start_server "$s"
            nbdcopy "$(uri "$s")" null:    # warm: the same cached image for both
            # and the same untimed 3 s of the measured load (cowfish's JIT compiles its write path)
            fio --name=warm --ioengine=nbd --uri="$(uri "$s")" --rw=randrw --bs=4k --iodepth=16 --numjobs=1 \
                --time_based --runtime=3 >/dev/null 2>&1 || die "warm-up fio on ${label[$s]} failed"
            read -r iops p999 mx < <(fio_run "$w" "$s")
            stop_server "$s"
            echo "$iops $p999 $mx" >>"$work/results/$w.$s"
            log "round $((r + 1)) $w ${label[$s]}: $(printf '%.0f' "$iops") IOPS, p99.9 ${p999} us, max ${mx} us"
        done
    done
done

median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
col() { awk -v c="$2" '{ print $c }' "$1" | median; }
echo
echo "# NBD tail, $(date -u +%Y-%m-%d), $(nproc) cores, $fstype; cowfish $commit"
echo "# command: $cmdline   (${rounds} rounds x ${fio_runtime} s; medians; latencies in microseconds)"
echo
echo "| workload | server | IOPS | p99.9 | max | IOPS ratio | p99.9 ratio | max ratio |"
echo "|---|---|---|---|---|---|---|---|"
for w in randrw randwrite; do
    for s in raw cowfish; do
        i=$(col "$work/results/$w.$s" 1); p=$(col "$work/results/$w.$s" 2); m=$(col "$work/results/$w.$s" 3)
        if [[ $s == raw ]]; then ri=$i; rp=$p; rm_=$m; ratios="| | | |"
        else ratios=$(awk -v i="$i" -v p="$p" -v m="$m" -v ri="$ri" -v rp="$rp" -v rm="$rm_" \
                'BEGIN { printf "| %.2fx | %.2fx | %.2fx |", i / ri, p / rp, m / rm }'); fi
        printf '| %s | %s | %.0f | %.0f | %.0f %s\n' "$w" "${label[$s]}" "$i" "$p" "$m" "$ratios"
    done
done
