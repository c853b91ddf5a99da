#!/usr/bin/env bash
# NBD server benchmark: cowfish serve against qemu-nbd (raw and qcow2) and nbdkit file, in one run,
# on the same disk, over Unix sockets. Needs root (it drops the page cache and may apt-get install
# qemu-utils, libnbd-bin, fio, nbdkit and jq).
#
#   sudo bench/nbd.sh               # full run: 1 GiB images, 8 GiB sparse convert, fio 15 s, 3 rounds (~15 min)
#   sudo bench/nbd.sh --quick       # smoke run: 256 MiB, 2 GiB sparse convert, fio 5 s, 1 round (~1.5 min)
#   sudo bench/nbd.sh --dir /data   # put the scratch directory under /data instead of /var/tmp
#
# Options: --quick, --rounds N, --fio-runtime SECONDS, --dir PARENT, --keep (leave the scratch
# directory), -h. The cowfish command is the one of this checkout (scripts/cowfish); the Release
# build is made first if it is missing or older than a source file.
#
# What one round does, for each workload in turn and for each server in turn (the server order
# rotates by one each round, so no server always goes first):
#   seq write   nbdcopy --flush SRC.raw URI       1 GiB of random data (not the image's own bytes)
#                                                  over the image, made durable by the final flush
#   seq read    nbdcopy URI null:                  the whole image
#   randread    fio --ioengine=nbd, 4 KiB, iodepth 16, 1 job, time_based; IOPS, p99 and max clat
#   randwrite   the same with rw=randwrite (no flush: every server runs with a writeback cache)
#   convert in  qemu-img convert -n -t writeback -f raw -O raw SPARSE.raw URI
#                                                  8 GiB virtual, 1 GiB of data in 256 extents of 4 MiB,
#                                                  into a fresh, empty 8 GiB export; -t writeback so that
#                                                  qemu-img's final flush reaches the server
#   convert out qemu-img convert -f raw -O raw URI OUT.raw   (a new local sparse file)
# Page cache: before every measurement the script runs sync and drops the page cache (so that no
# server pays for another's dirty pages), then reads the data extents of every file the measurement
# touches (the server's backing file or pool, the local source) once, so that each server starts
# from the same warm cache. Cold reads on this kind of virtual disk vary by up to 5× from one run
# to the next, which would measure the disk rather than the server.
# Each round starts every server afresh, runs an untimed 3 s fio randrw warm-up on its image
# (so that the .NET JIT of cowfish is warm, and the same for everyone), and stops it at the end.
set -euo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"
cmdline="bench/nbd.sh $*"
quick=0; rounds=""; fio_runtime=""; parent=/var/tmp; keep=0

usage() { sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; }
die() { echo "nbd.sh: $*" >&2; exit 1; }
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

MiB=$((1024 * 1024)); GiB=$((1024 * MiB))
if ((quick)); then
    img_size=$((256 * MiB)); conv_virtual=$((2 * GiB)); conv_data=$((256 * MiB))
    rounds="${rounds:-1}"; fio_runtime="${fio_runtime:-5}"
else
    img_size=$GiB; conv_virtual=$((8 * GiB)); conv_data=$GiB
    rounds="${rounds:-3}"; fio_runtime="${fio_runtime:-15}"
fi
[[ "$rounds" =~ ^[1-9][0-9]*$ ]] || die "--rounds takes a positive integer"
[[ "$fio_runtime" =~ ^[1-9][0-9]*$ ]] || die "--fio-runtime takes a positive integer"
extent=$((4 * MiB))

# ---------------------------------------------------------------------------------------------
# Prerequisites
[[ $EUID -eq 0 ]] || die "run as root (it drops the page cache with /proc/sys/vm/drop_caches)"
need_tools qemu-nbd:qemu-utils qemu-img:qemu-utils nbdcopy:libnbd-bin nbdinfo:libnbd-bin fio:fio nbdkit:nbdkit jq:jq
fio --enghelp=nbd >/dev/null 2>&1 || die "this fio has no nbd ioengine (Debian's fio package has it)"
nbdkit file --version >/dev/null 2>&1 || die "nbdkit has no file plugin"
build_cowfish

# ---------------------------------------------------------------------------------------------
# Scratch directory, servers, cleanup
scratch_parent "$parent"
work="$(mktemp -d "$parent/cowfish-nbd.XXXXXX")"
mkdir -p "$work/logs" "$work/sock"
trap 'servers_cleanup nbd.sh' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

log() { echo "[$(date +%H:%M:%S)] $*" >&2; }

servers=(raw qcow2 nbdkit cowfish)
declare -A label=([raw]="qemu-nbd, raw" [qcow2]="qemu-nbd, qcow2" [nbdkit]="nbdkit file" [cowfish]="cowfish serve")
pool="$work/cowfish/pool"
disk_file() { case "$1" in raw) echo "$work/raw/disk.raw" ;; qcow2) echo "$work/qcow2/disk.qcow2" ;;
                            nbdkit) echo "$work/nbdkit/disk.raw" ;; cowfish) echo "$pool" ;; esac; }
conv_file() { case "$1" in raw) echo "$work/raw/conv.raw" ;; qcow2) echo "$work/qcow2/conv.qcow2" ;;
                            nbdkit) echo "$work/nbdkit/conv.raw" ;; cowfish) echo "$pool" ;; esac; }
# One qemu-nbd or nbdkit process serves one file, so each has a disk server and a convert server;
# one cowfish serve process serves both files of its pool.
sock() { # SERVER disk|conv
    if [[ $1 == cowfish ]]; then echo "$work/sock/cowfish"; else echo "$work/sock/$1-$2"; fi
}
uri() { # SERVER disk|conv
    local export=""
    [[ $1 == cowfish ]] && export="vm/$2.img"
    echo "nbd+unix:///$export?socket=$(sock "$1" "$2")"
}

start_one() { # KEY LOGNAME COMMAND...
    local key="$1" logf="$work/logs/$2.log"; shift 2
    "$@" >>"$logf" 2>&1 &
    server_pid[$key]=$!
}
wait_ready() { # KEY URI
    local key="$1" u="$2"
    for _ in $(seq 300); do
        nbdinfo --size "$u" >/dev/null 2>&1 && return 0
        kill -0 "${server_pid[$key]}" 2>/dev/null || break
        sleep 0.1
    done
    tail -20 "$work/logs/$key.log" >&2 || true
    die "server $key did not come up on $u"
}
# Flags: -t persistent, --shared=8 so that nbdcopy's multi-conn gets several connections (qemu-nbd
# allows one client by default); --cache=writeback and --aio=threads are qemu-nbd's defaults, spelt
# out. nbdkit: the file plugin with its defaults (16 threads, page cache). cowfish: its defaults.
start_servers() {
    local kind f
    rm -f "$work"/sock/*   # nbdkit leaves its socket behind when stopped, and would not bind again
    for kind in disk conv; do
        f="$(disk_file raw)"; [[ $kind == conv ]] && f="$(conv_file raw)"
        start_one "raw-$kind" "raw-$kind" qemu-nbd -f raw -t -k "$(sock raw $kind)" --shared=8 \
            --cache=writeback --aio=threads "$f"
        f="$(disk_file qcow2)"; [[ $kind == conv ]] && f="$(conv_file qcow2)"
        start_one "qcow2-$kind" "qcow2-$kind" qemu-nbd -f qcow2 -t -k "$(sock qcow2 $kind)" --shared=8 \
            --cache=writeback --aio=threads "$f"
        f="$(disk_file nbdkit)"; [[ $kind == conv ]] && f="$(conv_file nbdkit)"
        start_one "nbdkit-$kind" "nbdkit-$kind" nbdkit --foreground --exit-with-parent \
            --unix "$(sock nbdkit $kind)" file "$f"
    done
    start_one cowfish cowfish "${cowfish[@]}" serve "$pool" --socket "$(sock cowfish disk)"
    local s
    for s in raw qcow2 nbdkit; do
        wait_ready "$s-disk" "$(uri $s disk)"; wait_ready "$s-conv" "$(uri $s conv)"
    done
    wait_ready cowfish "$(uri cowfish disk)"; wait_ready cowfish "$(uri cowfish conv)"
}
stop_servers() { local key; for key in "${!server_pid[@]}"; do stop_server "$key"; done; }

# ---------------------------------------------------------------------------------------------
# Inputs and images
log "scratch directory $work ($fstype, $(df -h --output=source,size,avail "$work" | tail -1 | xargs))"
log "making inputs: two ${img_size} B random files and a $((conv_virtual / GiB)) GiB sparse image"
head -c "$img_size" /dev/urandom >"$work/image.raw"     # the image every server starts from
head -c "$img_size" /dev/urandom >"$work/source.raw"    # what the sequential write writes over it
# The sparse convert source: n extents of 4 MiB, extent i somewhere inside stride i (deterministic).
n_ext=$((conv_data / extent)); stride=$((conv_virtual / n_ext)); slack=$((stride / MiB - extent / MiB))
truncate -s "$conv_virtual" "$work/sparse.raw"
head -c "$conv_data" /dev/urandom >"$work/sparse-data.tmp"
for ((i = 0; i < n_ext; i++)); do
    off=$((i * stride / MiB + (slack > 0 ? (i * 13) % slack : 0)))
    dd if="$work/sparse-data.tmp" of="$work/sparse.raw" bs=1M count=$((extent / MiB)) \
        skip=$((i * extent / MiB)) seek="$off" conv=notrunc,sparse status=none
done
rm -f "$work/sparse-data.tmp"

mkdir -p "$work/raw" "$work/qcow2" "$work/nbdkit" "$work/cowfish"
cp "$work/image.raw" "$work/raw/disk.raw"
cp "$work/image.raw" "$work/nbdkit/disk.raw"
qemu-img convert -q -f raw -O qcow2 "$work/image.raw" "$work/qcow2/disk.qcow2"
"${cowfish[@]}" mkfs "$pool" >/dev/null
"${cowfish[@]}" volume create "$pool" vm >/dev/null
"${cowfish[@]}" import "$pool" "$work/image.raw" vm/disk.img >/dev/null
rm -f "$work/image.raw"

new_conv_targets() { # fresh, empty, pre-sized convert targets
    rm -f "$(conv_file raw)" "$(conv_file qcow2)" "$(conv_file nbdkit)"
    truncate -s "$conv_virtual" "$(conv_file raw)" "$(conv_file nbdkit)"
    qemu-img create -q -f qcow2 "$(conv_file qcow2)" "$conv_virtual"
    "${cowfish[@]}" rm "$pool" vm/conv.img >/dev/null 2>&1 || true
    "${cowfish[@]}" truncate "$pool" vm/conv.img "$conv_virtual" >/dev/null
}

# ---------------------------------------------------------------------------------------------
# Measurements
warm() { # read the data extents of each file once (nbdcopy skips holes of local files)
    local f
    for f in "$@"; do nbdcopy "$f" null: || die "warming $f failed"; done
}
prepare() { # FILES TO WARM...
    sync
    echo 3 >/proc/sys/vm/drop_caches
    warm "$@"
}
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.4f", b - a }'; }
record() { echo "$3" >>"$work/results/$1.$2"; }   # WORKLOAD SERVER VALUE
mkdir -p "$work/results"

run_timed() { # WORKLOAD SERVER COMMAND... -> seconds on stdout
    local w="$1" s="$2"; shift 2
    local t0 t1
    t0=$(now)
    "$@" >"$work/logs/last.out" 2>&1 || { cat "$work/logs/last.out" >&2; die "$w on ${label[$s]} failed: $*"; }
    t1=$(now)
    elapsed "$t0" "$t1"
}
fio_run() { # WORKLOAD SERVER RW
    local w="$1" s="$2" rw="$3" out="$work/logs/fio.json" dir
    fio --name="$w" --ioengine=nbd --uri="$(uri "$s" disk)" --rw="$rw" --bs=4k --iodepth=16 \
        --numjobs=1 --time_based --runtime="$fio_runtime" --output-format=json --output="$out" \
        >"$work/logs/last.out" 2>&1 || { cat "$work/logs/last.out" >&2; die "fio $rw on ${label[$s]} failed"; }
    dir=read; [[ $rw == randwrite ]] && dir=write
    [[ "$(jq '.jobs[0].error' "$out")" == 0 ]] || die "fio $rw on ${label[$s]} reported an error"
    record "$w" "$s" "$(jq ".jobs[0].$dir.iops" "$out")"
    record "$w-p99" "$s" "$(jq ".jobs[0].$dir.clat_ns.percentile[\"99.000000\"] / 1000" "$out")"
    record "$w-max" "$s" "$(jq ".jobs[0].$dir.clat_ns.max / 1000" "$out")"
}

measure() { # ROUND WORKLOAD SERVER
    local r="$1" w="$2" s="$3" secs
    case "$w" in
        seqwrite)
            prepare "$work/source.raw" "$(disk_file "$s")"
            secs=$(run_timed "$w" "$s" nbdcopy --flush "$work/source.raw" "$(uri "$s" disk)")
            record "$w" "$s" "$(awk -v b="$img_size" -v t="$secs" 'BEGIN { printf "%.1f", b / t / 1e6 }')" ;;
        seqread)
            prepare "$(disk_file "$s")"
            secs=$(run_timed "$w" "$s" nbdcopy "$(uri "$s" disk)" null:)
            record "$w" "$s" "$(awk -v b="$img_size" -v t="$secs" 'BEGIN { printf "%.1f", b / t / 1e6 }')" ;;
        randread)
            prepare "$(disk_file "$s")"; fio_run "$w" "$s" randread ;;
        randwrite)
            prepare "$(disk_file "$s")"; fio_run "$w" "$s" randwrite ;;
        convin)
            prepare "$work/sparse.raw" "$(conv_file "$s")"
            secs=$(run_timed "$w" "$s" qemu-img convert -n -t writeback -f raw -O raw \
                "$work/sparse.raw" "$(uri "$s" conv)")
            record "$w" "$s" "$secs" ;;
        convout)
            rm -f "$work/out.raw"
            prepare "$(conv_file "$s")"
            secs=$(run_timed "$w" "$s" qemu-img convert -f raw -O raw "$(uri "$s" conv)" "$work/out.raw")
            record "$w" "$s" "$secs"
            if ((r == 1)); then # the round trip must give back the source, byte for byte
                qemu-img compare -q -f raw -F raw "$work/sparse.raw" "$work/out.raw" \
                    || die "convert round trip through ${label[$s]} does not match the source"
            fi
            rm -f "$work/out.raw" ;;
    esac
    log "round $r $w ${label[$s]}: $(tail -1 "$work/results/$w.$s")"
}

workloads=(seqwrite seqread randread randwrite convin convout)
start_time=$(date +%s)
start_utc="$(date -u '+%Y-%m-%d %H:%M UTC')"
load_start="$(cut -d' ' -f1-3 /proc/loadavg)"
for ((r = 1; r <= rounds; r++)); do
    log "round $r of $rounds: fresh convert targets, starting servers"
    new_conv_targets
    start_servers
    order=()
    for ((k = 0; k < ${#servers[@]}; k++)); do order+=("${servers[(k + r - 1) % ${#servers[@]}]}"); done
    for s in "${order[@]}"; do # untimed warm-up: JIT for cowfish, caches for everyone
        fio --name=warmup --ioengine=nbd --uri="$(uri "$s" disk)" --rw=randrw --bs=4k --iodepth=16 \
            --time_based --runtime=3 --output="$work/logs/warmup.out" >/dev/null 2>&1 \
            || die "warm-up fio on ${label[$s]} failed"
    done
    for w in "${workloads[@]}"; do
        for s in "${order[@]}"; do measure "$r" "$w" "$s"; done
    done
    stop_servers
done
end_time=$(date +%s)
load_end="$(cut -d' ' -f1-3 /proc/loadavg)"

log "checking the cowfish pool"
check_out="$("${cowfish[@]}" check "$pool" 2>&1)" && check="clean" || check="FAULTS: $check_out"
pool_bytes=$(stat -c %s "$pool")

# ---------------------------------------------------------------------------------------------
# Report
median() { sort -g "$1" | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
med() { median "$work/results/$1.$2"; }
all_rounds() { # WORKLOAD SERVER UNIT
    local f='%.1f'; [[ $3 == IOPS ]] && f='%.0f'; [[ $3 == s ]] && f='%.2f'
    awk -v f="$f" '{ printf (NR > 1 ? ", " : "") f, $1 }' "$work/results/$1.$2"
}
fmt() { # VALUE UNIT
    case "$2" in
        MB/s) awk -v v="$1" 'BEGIN { printf "%.0f MB/s", v }' ;;
        IOPS) awk -v v="$1" 'BEGIN { if (v >= 1000) printf "%.1f K IOPS", v / 1000; else printf "%.0f IOPS", v }' ;;
        s) awk -v v="$1" 'BEGIN { printf "%.2f s", v }' ;;
        us) awk -v v="$1" 'BEGIN { if (v >= 1000) printf "%.2f ms", v / 1000; else printf "%.0f µs", v }' ;;
    esac
}
# Ratio cowfish / baseline as a speed: for seconds (lower is better) it is baseline ÷ cowfish.
ratio() { # WORKLOAD UNIT BASELINE
    awk -v c="$(med "$1" cowfish)" -v b="$(med "$1" "$3")" -v u="$2" \
        'BEGIN { r = (u == "s") ? b / c : c / b; printf "%.2f", r }'
}
verdict() { awk -v r="$1" -v t="$2" 'BEGIN { print (r >= t) ? "met" : "**missed**" }'; }

declare -A wname=([seqwrite]="nbdcopy sequential write, $((img_size / MiB)) MiB + flush"
                  [seqread]="nbdcopy sequential read, $((img_size / MiB)) MiB"
                  [randread]="fio 4 KiB random read, qd16"
                  [randwrite]="fio 4 KiB random write, qd16"
                  [convin]="qemu-img convert in, $((conv_virtual / GiB)) GiB sparse ($((conv_data / MiB)) MiB data)"
                  [convout]="qemu-img convert out, $((conv_virtual / GiB)) GiB sparse ($((conv_data / MiB)) MiB data)")
declare -A wunit=([seqwrite]=MB/s [seqread]=MB/s [randread]=IOPS [randwrite]=IOPS [convin]=s [convout]=s)

mkdir -p "$here/bench/results"
report="$here/bench/results/nbd-$(date -u +%Y%m%d-%H%M%S).md"
{
    echo "## NBD server: cowfish serve vs qemu-nbd and nbdkit"
    echo
    echo "- date: $start_utc; measurements took $(((end_time - start_time) / 60)) min $(((end_time - start_time) % 60)) s, the whole script $((SECONDS / 60)) min $((SECONDS % 60)) s"
    echo "- cowfish: engine commit $commit: \"$subject\", Release build"
    echo "- command: \`$cmdline\` (as root)"
    echo "- machine: $(nproc) CPUs, $(awk '/MemTotal/ { printf "%.0f GB", $2 / 1e6 }' /proc/meminfo) RAM, kernel $(uname -r); scratch on $fstype ($(df --output=source "$work" | tail -1)); load average $load_start at the start, $load_end at the end"
    echo "- clients: $(nbdcopy --version | head -1), $(fio --version), $(qemu-img --version | head -1 | cut -d' ' -f1-3); servers: $(qemu-nbd --version | head -1), $(nbdkit --version)"
    echo "- $rounds round(s), servers round robin (order rotated each round); figures are medians; fio runs $fio_runtime s per measurement"
    echo "- cowfish pool after the run: $(awk -v b="$pool_bytes" 'BEGIN { printf "%.2f GB", b / 1e9 }'); check: $check"
    echo
    echo "| workload | ${label[raw]} | ${label[qcow2]} | ${label[nbdkit]} | ${label[cowfish]} | cowfish ÷ raw (≥ 0.80×) | cowfish ÷ qcow2 (≥ 1.00×) |"
    echo "|---|---|---|---|---|---|---|"
    for w in "${workloads[@]}"; do
        u="${wunit[$w]}"; rr=$(ratio "$w" "$u" raw); rq=$(ratio "$w" "$u" qcow2)
        echo "| ${wname[$w]} | $(fmt "$(med "$w" raw)" "$u") | $(fmt "$(med "$w" qcow2)" "$u") | $(fmt "$(med "$w" nbdkit)" "$u") | $(fmt "$(med "$w" cowfish)" "$u") | ${rr}× $(verdict "$rr" 0.8) | ${rq}× $(verdict "$rq" 1.0) |"
    done
    echo
    echo "Ratios are speeds: for the convert rows (seconds, lower is better) the ratio is baseline time ÷ cowfish time."
    echo
    echo "fio completion latency (medians over the rounds of each run's p99 and max):"
    echo
    echo "| workload | ${label[raw]} | ${label[qcow2]} | ${label[nbdkit]} | ${label[cowfish]} |"
    echo "|---|---|---|---|---|"
    for w in randread randwrite; do
        for q in p99 max; do
            row="| ${wname[$w]}, $q |"
            for s in "${servers[@]}"; do row+=" $(fmt "$(med "$w-$q" "$s")" us) |"; done
            echo "$row"
        done
    done
    echo
    echo "Every round (in round order):"
    echo
    echo "| workload | ${label[raw]} | ${label[qcow2]} | ${label[nbdkit]} | ${label[cowfish]} |"
    echo "|---|---|---|---|---|"
    for w in "${workloads[@]}"; do
        row="| ${wname[$w]} (${wunit[$w]}) |"
        for s in "${servers[@]}"; do row+=" $(all_rounds "$w" "$s" "${wunit[$w]}") |"; done
        echo "$row"
    done
    echo
    echo "Method: servers on Unix sockets, every file in one scratch directory under $parent ($fstype); qemu-nbd \`-f raw|qcow2 -t -k SOCK --shared=8 --cache=writeback --aio=threads\`, \`nbdkit --foreground --unix SOCK file FILE\`, \`cowfish serve POOL --socket SOCK\` (exports vm/disk.img and vm/conv.img). Images start as the same $((img_size / MiB)) MiB of random data (raw copies, a qcow2 made by qemu-img convert, a cowfish import). Before each measurement: sync, drop the page cache, then read the data of the files the measurement touches once (warm, the same for every server). Sequential write: \`nbdcopy --flush SOURCE URI\` of other random data over the whole image. Sequential read: \`nbdcopy URI null:\`. fio: \`fio --ioengine=nbd --uri=URI --rw=randread|randwrite --bs=4k --iodepth=16 --numjobs=1 --time_based --runtime=$fio_runtime\`. Convert in: \`qemu-img convert -n -t writeback -f raw -O raw SPARSE URI\` into an empty export of the same size, made fresh each round; convert out: \`qemu-img convert -f raw -O raw URI OUT\` to a new local file (checked against the source with \`qemu-img compare\` in round 1)."
} >"$report"

cat "$report"
log "report saved as $report; total $((end_time - start_time)) s"
