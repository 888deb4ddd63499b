#!/bin/sh
# A grid worker node without FUSE: the host's own / is the guest's /, and
# uvm adds /cvmfs/FQRN for the software repositories the job needs, read
# from a web server through the shared cache.  Unknown names under /cvmfs are
# ENOENT, as with autofs.  Runs unattended, exit status 0 on success.
. "$(dirname "$0")/_lib.sh"

serve
repository sw.grid.local
repository conditions.grid.local

step "publish the experiment software and the conditions data"
mkdir -p "$work/sw/v3/bin" "$work/sw/v3/lib/python" "$work/cond/2026"
cat > "$work/sw/v3/lib/python/selector.py" <<'PY'
import sys
def select(lines, cut):
    return [l for l in lines if float(l.split()[1]) > cut]
if __name__ == "__main__":
    cut = float(open(sys.argv[2]).read().split()[1])
    events = open(sys.argv[1]).read().splitlines()
    kept = select(events, cut)
    print(f"selector v3: {len(kept)} of {len(events)} events above {cut}")
PY
cat > "$work/sw/v3/bin/run-selection" <<'SH'
#!/bin/sh
exec python3 /cvmfs/sw.grid.local/v3/lib/python/selector.py "$1" /cvmfs/conditions.grid.local/2026/cut.txt
SH
chmod 755 "$work/sw/v3/bin/run-selection"
ln -s v3 "$work/sw/current"
printf 'cut 25.0\n' > "$work/cond/2026/cut.txt"
publish "$work/sw" sw.grid.local --tag v3
publish "$work/cond" conditions.grid.local

step "the job, as a pilot would start it (plain files on the worker node)"
mkdir -p "$work/job"
"$python" -c "
import random; r = random.Random(7)
open('$work/job/events.txt', 'w').write(''.join(f'{i} {r.uniform(0, 50):.2f}\n' for i in range(500)))"
cat > "$work/job/job.sh" <<'SH'
#!/bin/sh
set -e
echo "worker: $(uname -n), /cvmfs holds: $(ls /cvmfs | tr '\n' ' ')"
ls /cvmfs/atlas.cern.ch 2>&1 | sed 's/^/expected: /' || true
PATH=/cvmfs/sw.grid.local/current/bin:$PATH
run-selection "$(dirname "$0")/events.txt"
SH
chmod 755 "$work/job/job.sh"

step "run it with /cvmfs from uvm: no FUSE, no root"
uvmc run --cvmfs sw.grid.local --cvmfs conditions.grid.local -- "$work/job/job.sh" | tee "$work/out.txt"
grep -q "selector v3: .* of 500 events above 25.0" "$work/out.txt"
grep -q "expected: .*No such file or directory" "$work/out.txt"

step "the same with every configured repository (--cvmfs all), warm cache"
uvmc run --cvmfs all -- /bin/sh -c 'ls /cvmfs; cat /cvmfs/conditions.grid.local/2026/cut.txt'
echo "grid-worker demo: ok"
