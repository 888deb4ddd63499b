#!/bin/sh
# Time machine: a software repository gets a new revision with different
# calibration constants; the same job run by tag and by date reads either
# revision, and a run record replays the first one exactly.  Runs unattended,
# exit status 0 on success.
. "$(dirname "$0")/_lib.sh"

serve
repository sw.tm.local

mkdir -p "$work/sw/bin" "$work/sw/calib"
cat > "$work/sw/bin/analyze" <<'SH'
#!/bin/sh
scale=$(cat /cvmfs/sw.tm.local/calib/scale)
echo "calibration $scale: result $(echo "$scale" | awk '{ printf "%.2f", 1000 * $1 }')"
SH
chmod 755 "$work/sw/bin/analyze"

step "revision 1: calibration 1.00, tagged v1"
echo 1.00 > "$work/sw/calib/scale"
publish "$work/sw" sw.tm.local --tag v1 --description "first calibration"
sleep 2
between=$(date -u +%Y-%m-%dT%H:%M:%SZ)
sleep 2

step "revision 2: calibration 1.07, tagged v2"
echo 1.07 > "$work/sw/calib/scale"
publish "$work/sw" sw.tm.local --tag v2 --description "recalibrated"

job="/cvmfs/sw.tm.local/bin/analyze"
step "the same job, by tag"
uvmc run --cvmfs sw.tm.local@v1 --record "$work/v1.json" -- "$job" | tee "$work/v1.txt"
uvmc run --cvmfs sw.tm.local@v2 -- "$job" | tee "$work/v2.txt"
step "the same job, by date: as the repository was at $between"
uvmc run --cvmfs "sw.tm.local@$between" -- "$job" | tee "$work/date.txt"
step "the newest revision"
uvmc run --cvmfs sw.tm.local -- "$job" | tee "$work/head.txt"
step "replay the record of the v1 run"
sed -n 's/.*"root_hash": "\([0-9a-f]*\)".*/  pinned root catalog \1/p' "$work/v1.json"
uvmc run --replay "$work/v1.json" | tee "$work/replay.txt"

grep -q "result 1000.00" "$work/v1.txt"
grep -q "result 1070.00" "$work/v2.txt"
cmp -s "$work/v1.txt" "$work/date.txt"
cmp -s "$work/v2.txt" "$work/head.txt"
cmp -s "$work/v1.txt" "$work/replay.txt"
echo "time-machine demo: ok"
