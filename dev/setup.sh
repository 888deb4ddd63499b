#!/usr/bin/env bash
# Install everything uvm, its tests, demos and benchmarks need on Debian 12,
# then uvm itself (with its C extension) into ./.venv.  Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

SYSTEM_PACKAGES=(
    python3-venv python3-dev build-essential pkg-config
    zlib1g-dev libssl-dev libffi-dev            # native/ links zlib and libcrypto
    libdeflate-dev                              # native/: one-shot inflate, ~2x zlib
    gcc-multilib libc6-dev-i386                 # 32-bit guest roots for the sandbox tests
    squid nginx-light                           # real proxy and web server in the tests
    debootstrap strace file util-linux passwd   # Debian roots, test user
    libpython3.11-testsuite                     # CPython's regression tests (sandbox conformance)
)

# The 32-bit guest root of the sandbox tests is unpacked from Debian i386
# packages (apt-get download, no install): apt must know the architecture.
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
need_update=0
if ! dpkg --print-foreign-architectures | grep -qx i386; then
    $sudo dpkg --add-architecture i386
    need_update=1
fi

missing=()
for pkg in "${SYSTEM_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ] || [ "$need_update" -eq 1 ]; then
    export DEBIAN_FRONTEND=noninteractive
    # A mirror in mid-sync fails one index (seen with bookworm-security i386);
    # the others are still usable, so go on and let the install decide.
    $sudo apt-get update -qq || echo "setup.sh: apt-get update reported errors, continuing" >&2
fi
if [ ${#missing[@]} -gt 0 ]; then
    # Packaged services must not start on their own: the tests start their own.
    printf '#!/bin/sh\nexit 101\n' | $sudo tee /usr/sbin/policy-rc.d >/dev/null
    $sudo chmod +x /usr/sbin/policy-rc.d
    $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    $sudo rm -f /usr/sbin/policy-rc.d
fi

# Debian's interpreter, not a per-user one: the sandbox tests run uvm as an
# unprivileged user too, who must be able to execute it.
[ -x .venv/bin/python ] || /usr/bin/python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
# An editable install whose .pth names the checkout: the default mode's
# import hook costs every uvm start 15-20 ms (pathlib and friends), which
# an installed uvm does not pay and the benchmarks would count.
.venv/bin/python -m pip install -q -e '.[test]' --config-settings editable_mode=compat 2>/dev/null \
    || .venv/bin/python -m pip install -q -e '.[test]'
