#!/bin/sh
# The first uvm demo: create keys, publish a small tree as a CernVM-FS
# repository, serve it on loopback with python3 -m http.server, and read it
# back with every signature and hash checked. Runs unattended; cleans up.
set -eu

here=$(cd "$(dirname "$0")/.." && pwd)
if [ -x "$here/.venv/bin/uvm" ]; then uvm="$here/.venv/bin/uvm"; else uvm=uvm; fi
python=python3
[ -x "$here/.venv/bin/python" ] && python="$here/.venv/bin/python"

work=$(mktemp -d "${TMPDIR:-/tmp}/uvm-quickstart.XXXXXX")
server_pid=
cleanup() {
    status=$?
    if [ -n "$server_pid" ]; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

fqrn=demo.uvm.local
step() { printf '\n== %s\n' "$*"; }

step "a small tree to publish"
mkdir -p "$work/src/bin" "$work/src/share/doc" "$work/src/lib/big"
printf '#!/bin/sh\necho "hello from CernVM-FS"\n' > "$work/src/bin/hello"
chmod 755 "$work/src/bin/hello"
printf 'uvm quickstart demo\n' > "$work/src/share/doc/README"
ln -s ../share/doc/README "$work/src/README"
ln -s '$(UVM_ARCH:-x86_64)/lib' "$work/src/arch-lib"          # a variant symlink
: > "$work/src/lib/big/.cvmfscatalog"                           # a nested catalog
"$python" -c "import os; open('$work/src/lib/big/blob', 'wb').write(os.urandom(3 << 20))"
find "$work/src" | sed "s|$work/src|  src|"

step "uvm keys create"
"$uvm" keys create "$fqrn" --dir "$work/keys"

step "uvm publish (stratum 0 in www/cvmfs/$fqrn)"
"$uvm" publish "$work/src" --repo "$fqrn" --to "$work/www/cvmfs/$fqrn" --keys "$work/keys" \
    --tag v1 --description "first revision" --chunk-sizes 262144,524288,1048576

step "serve it with python3 -m http.server on loopback"
port=$("$python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$python" -m http.server --bind 127.0.0.1 --directory "$work/www" "$port" >/dev/null 2>&1 &
server_pid=$!
for _ in $(seq 50); do
    "$python" -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/cvmfs/$fqrn/.cvmfspublished')" \
        2>/dev/null && break
    sleep 0.1
done

export CVMFS_SERVER_URL="http://127.0.0.1:$port/cvmfs/@fqrn@"
export CVMFS_KEYS_DIR="$work/keys"
export XDG_STATE_HOME="$work/state"

step "uvm repo info $fqrn"
"$uvm" repo info "$fqrn"

step "uvm repo ls $fqrn:/"
"$uvm" repo ls "$fqrn:/"

step "uvm repo cat $fqrn:/bin/hello"
"$uvm" repo cat "$fqrn:/bin/hello"

step "publish a change, tagged v2; read both revisions"
printf 'second revision\n' > "$work/src/share/doc/NEWS"
"$uvm" publish "$work/src" --repo "$fqrn" --to "$work/www/cvmfs/$fqrn" --keys "$work/keys" \
    --tag v2 --chunk-sizes 262144,524288,1048576
"$uvm" repo ls "$fqrn:/share/doc"
"$uvm" repo ls "$fqrn:/share/doc" --tag v1

step "uvm repo export $fqrn:/ (modes, mtimes, symlinks as published)"
"$uvm" repo export "$fqrn:/" "$work/export"
cmp "$work/src/lib/big/blob" "$work/export/lib/big/blob" && echo "  3 MiB chunked file: identical"

step "a tampered object is refused"
obj=$(find "$work/www/cvmfs/$fqrn/data" -type f -name '*P' | head -n 1)   # a chunk of the blob
printf 'X' | dd of="$obj" bs=1 seek=100 conv=notrunc 2>/dev/null
if "$uvm" repo cat "$fqrn:/lib/big/blob" >/dev/null; then
    echo "  unexpected: tampered data was accepted"; exit 1
fi

printf '\nquickstart: all steps passed\n'
