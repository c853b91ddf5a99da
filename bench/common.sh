# Shared by the bench/*.sh scripts. Source it after setting `here` (the checkout) and `die`.

# need_tools COMMAND:PACKAGE ...: installs, with apt-get, the packages of the commands that are missing.
need_tools() {
    local pair missing=()
    for pair in "$@"; do
        command -v "${pair%%:*}" >/dev/null || missing+=("${pair#*:}")
    done
    ((${#missing[@]})) || return 0
    mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
    echo "${0##*/}: installing ${missing[*]}" >&2
    command -v apt-get >/dev/null || die "missing ${missing[*]} and no apt-get to install them"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >&2 \
        || { apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >&2; } \
        || die "apt-get install ${missing[*]} failed"
}

# build_cowfish: builds the Release CLI of this checkout if it is missing or older than a source
# file, and sets `cowfish` (the command), `commit` and `subject` (the engine commit measured: the
# last one that touched src/, since commits to bench/ or docs/ do not change it).
build_cowfish() {
    command -v dotnet >/dev/null || die "dotnet (the .NET 10 SDK) is needed to build cowfish"
    local dll="$here/src/Cowfish.Cli/bin/Release/net10.0/Cowfish.Cli.dll"
    if [[ ! -f "$dll" ]] || [[ -n "$(find "$here/src" -newer "$dll" -type f \
            \( -name '*.cs' -o -name '*.csproj' \) -print -quit)" ]]; then
        echo "${0##*/}: building cowfish (dotnet build -c Release)" >&2
        (cd "$here" && dotnet build -c Release src/Cowfish.Cli >&2) || die "dotnet build failed"
    fi
    cowfish=("$here/scripts/cowfish")
    commit="$(git -C "$here" log -1 --format=%h -- src 2>/dev/null || echo unknown)"
    subject="$(git -C "$here" log -1 --format=%s -- src 2>/dev/null | cut -c1-80 || true)"
    commit="$commit (checkout at $(git -C "$here" rev-parse --short HEAD 2>/dev/null || echo unknown))"
    [[ -z "$(git -C "$here" status --porcelain -- src 2>/dev/null)" ]] || commit="$commit (with uncommitted changes in src/)"
}

# scratch_parent DIR: creates DIR and refuses a memory file system (it would measure RAM, not the
# disk); sets `fstype` for the report.
scratch_parent() {
    mkdir -p "$1"
    fstype="$(df --output=fstype "$1" | tail -1 | tr -d ' ')"
    [[ "$fstype" != tmpfs && "$fstype" != ramfs ]] || die "$1 is on $fstype; pass --dir on a real disk"
}

# Servers the NBD scripts start, by key: stop_server KEY sends SIGTERM, waits up to 60 s (cowfish
# makes acknowledged writes durable and exits 0), then kills. servers_cleanup NAME stops them all
# and removes $work unless $keep; the scripts install it as their EXIT trap.
declare -A server_pid=()
stop_server() {
    local pid="${server_pid[$1]:-}"
    [[ -n "$pid" ]] || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 600); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    unset "server_pid[$1]"
}
servers_cleanup() {
    local key
    for key in "${!server_pid[@]}"; do stop_server "$key"; done
    if ((keep)); then echo "$1: scratch directory kept: $work" >&2; else rm -rf "$work"; fi
}
