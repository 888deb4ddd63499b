#!/bin/sh
# Data preservation, ALEPH style: an operating system frozen as a template in
# one CernVM-FS repository, a "legacy" analysis program compiled inside that
# template and published in a second repository, and today's data bound in
# from the host.  Runs unattended, exit status 0 on success.
#
# The Debian root: $UVM_DEBIAN_ROOT if set (a directory, e.g. the test
# suite's cached one: python3 tests/sandbox/roots.py debian), else built here
# with debootstrap (minbase + gcc; needs root and the Debian mirror apt uses).
. "$(dirname "$0")/_lib.sh"

step "the operating system: a Debian root"
if [ -n "${UVM_DEBIAN_ROOT:-}" ]; then
    rootfs=$UVM_DEBIAN_ROOT
    echo "using $rootfs"
else
    command -v debootstrap >/dev/null || { echo "debootstrap is missing (apt-get install debootstrap)"; exit 1; }
    [ "$(id -u)" = 0 ] || { echo "debootstrap needs root; or set UVM_DEBIAN_ROOT to a Debian root"; exit 1; }
    mirror=$(sed -n 's/^deb \(\[[^]]*\] \)\{0,1\}\(http[^ ]*\) .*/\2/p' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null | head -1)
    [ -n "$mirror" ] || mirror=$(sed -n 's/^URIs: *\(http[^ ]*\).*/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -1)
    rootfs="$work/debian"
    show debootstrap --variant=minbase --include=gcc,libc6-dev bookworm "$rootfs" "${mirror:-http://deb.debian.org/debian}" >/dev/null
fi
grep PRETTY_NAME "$rootfs/etc/os-release"

serve
repository os.aleph.local
repository sw.aleph.local
cat >> "$config" <<CFG

[templates.aleph-os]
repository = "os.aleph.local"
path = "/"
env = { LANG = "C", LC_ALL = "C" }
CFG

step "publish the OS as a template (repository os.aleph.local)"
publish "$rootfs" os.aleph.local --tag frozen-2026 --description "analysis OS, frozen"
uvmc templates aleph-os

step "the legacy analysis program, compiled inside the template"
mkdir -p "$work/build" "$work/sw/alpha/1.0/bin"
cat > "$work/build/alpha.c" <<'C'
/* ALPHA: a legacy event analysis (K&R-flavoured C).  Reads "energy px py pz"
   per line, prints the event count, the mean energy and the mean invariant mass. */
#include <stdio.h>
#include <math.h>
main(argc, argv) int argc; char **argv;
{
    FILE *in; double e, px, py, pz, se = 0, sm = 0; long n = 0;
    if (argc < 2 || !(in = fopen(argv[1], "r"))) { fprintf(stderr, "usage: alpha FILE\n"); return 2; }
    while (fscanf(in, "%lf %lf %lf %lf", &e, &px, &py, &pz) == 4) {
        n++; se += e; sm += sqrt(fabs(e*e - px*px - py*py - pz*pz));
    }
    printf("ALPHA events: %ld\nALPHA mean energy: %.3f\nALPHA mean mass: %.3f\n",
           n, n ? se / n : 0.0, n ? sm / n : 0.0);
    return 0;
}
C
uvmc run --template aleph-os -b "$work/build:/build" -w /build -- \
    gcc -std=gnu89 -w -O1 -o /build/alpha alpha.c -lm
cp "$work/build/alpha" "$work/sw/alpha/1.0/bin/alpha"
printf 'export PATH=/cvmfs/sw.aleph.local/alpha/1.0/bin:$PATH\n' > "$work/sw/alpha/1.0/setup.sh"

step "publish the software (repository sw.aleph.local)"
publish "$work/sw" sw.aleph.local --tag alpha-1.0

step "today's data, on the host"
mkdir -p "$work/data"
"$python" - "$work/data/events.txt" <<'PY'
import random, sys
rng = random.Random(1989)
with open(sys.argv[1], "w") as out:
    for _ in range(1000):
        m = rng.gauss(91.19, 2.5); px, py, pz = (rng.gauss(0, 10) for _ in range(3))
        out.write(f"{(m*m + px*px + py*py + pz*pz) ** 0.5:.4f} {px:.4f} {py:.4f} {pz:.4f}\n")
PY
head -2 "$work/data/events.txt"

step "run the analysis: OS from the template, software from /cvmfs, data from the host"
uvmc run --template aleph-os --cvmfs sw.aleph.local -b "$work/data:/data" -- \
    /bin/sh -c '. /cvmfs/sw.aleph.local/alpha/1.0/setup.sh && alpha /data/events.txt' | tee "$work/result.txt"
grep -q "ALPHA events: 1000" "$work/result.txt"
grep -q "ALPHA mean mass: 91" "$work/result.txt"
echo "aleph demo: ok"
