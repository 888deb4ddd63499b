# Shared by the demos (sourced): find uvm, a work directory removed at exit,
# a loopback web server for the repositories, and a configuration file.
set -eu

here=$(cd "$(dirname "$0")/.." && pwd)
if [ -x "$here/.venv/bin/uvm" ]; then uvm="$here/.venv/bin/uvm"; else uvm=uvm; fi
python=python3
[ -x "$here/.venv/bin/python" ] && python="$here/.venv/bin/python"

work=$(mktemp -d "${UVM_DEMO_TMP:-${TMPDIR:-/var/tmp}}/uvm-demo.XXXXXX")
chmod 755 "$work"
server_pid=
cleanup() {
    status=$?
    if [ -n "$server_pid" ]; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    if [ -z "${UVM_DEMO_KEEP:-}" ]; then
        chmod -R u+rwX "$work" 2>/dev/null || true
        rm -rf "$work"
    else
        echo "kept $work"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

step() { printf '\n== %s\n' "$*"; }
show() { printf '$ %s\n' "$*" >&2; "$@"; }

# uvm reads only the configuration written here, and keeps its cache and
# state in the work directory.
for var in $(env | sed -n 's/^\(CVMFS_[A-Z_]*\)=.*/\1/p'); do unset "$var"; done
export XDG_CONFIG_HOME="$work/config" XDG_STATE_HOME="$work/state"
config="$work/config.toml"
printf 'cache_base = "%s"\n' "$work/cache" > "$config"

serve() {  # serve $work/www on loopback; sets $base_url
    mkdir -p "$work/www"
    port=$("$python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    "$python" -m http.server --bind 127.0.0.1 --directory "$work/www" "$port" >/dev/null 2>&1 &
    server_pid=$!
    for _ in $(seq 100); do
        "$python" -c "import socket; socket.create_connection(('127.0.0.1', $port), 1)" 2>/dev/null && break
        sleep 0.1
    done
    base_url="http://127.0.0.1:$port/cvmfs/@fqrn@"
}

repository() {  # repository FQRN: keys, and a [repositories] entry pointing at the server
    "$uvm" -q keys create "$1" --dir "$work/keys" >/dev/null
    printf '\n[repositories."%s"]\nserver_url = "%s"\nkeys_dir = "%s"\n' \
        "$1" "$base_url" "$work/keys" >> "$config"
}

publish() {  # publish SRC FQRN [uvm publish options]
    src=$1 fqrn=$2
    shift 2
    show "$uvm" publish "$src" --repo "$fqrn" --to "$work/www/cvmfs/$fqrn" --keys "$work/keys" "$@"
}

uvmc() { show "$uvm" --config "$config" "$@"; }
