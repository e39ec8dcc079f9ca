#!/bin/bash
# alternate.sh ROUNDS BINARY... runs the ReducePartition phase of the engine
# benchmark alone (sluice bench engine --runs 1 --partitions 0 --map=false)
# with each sluice binary in turn, ROUNDS times, the binaries' order rotating
# each round, and prints each binary's medians and, against the first binary,
# the median of the paired ratios and how many rounds it was faster in.
# BENCH_DIR is the directory measured (default /work/benchdir/engine); EXTRA
# is added to every command line. Needs python3.
set -euo pipefail
if (($# < 2)); then
	echo "usage: $0 ROUNDS BINARY..." >&2
	exit 2
fi
rounds=$1
shift
bins=("$@")
n=${#bins[@]}
dir=${BENCH_DIR:-/work/benchdir/engine}
out=$(mktemp)
trap 'rm -f "$out" "$out.err"' EXIT
for ((r = 0; r < rounds; r++)); do
	for ((k = 0; k < n; k++)); do
		i=$(((k + r) % n))
		# shellcheck disable=SC2086
		if ! json=$("${bins[$i]}" bench engine --dir "$dir" --runs 1 --partitions 0 --map=false --json ${EXTRA:-} 2>"$out.err" | tail -1); then
			echo "round $r, ${bins[$i]} failed:" >&2
			cat "$out.err" >&2
			exit 1
		fi
		v=$(python3 -c 'import json,sys; d=json.loads(sys.argv[1]); print("%.0f\t%.2f\t%.2f\t%.0f" % (d["reduce_write_mib_s"], d["reduce_push_s"], d["reduce_finalize_s"], d["commit_p50_ms"]))' "$json")
		printf '%d\t%d\t%s\t%s\n' "$r" "$i" "$i:$(basename "${bins[$i]}")" "$v" | tee -a "$out"
	done
done
python3 - "$out" "$n" <<'PY'
import sys, statistics as st
rows = [l.split('\t') for l in open(sys.argv[1]).read().split('\n') if l]
n = int(sys.argv[2]); by = {}
for r, i, name, mib, push, fin, c50 in rows:
    by.setdefault(int(i), {})[int(r)] = (float(mib), float(push), float(fin), float(c50), name)
for i in range(n):
    d = by[i]; name = next(iter(d.values()))[4]
    line = "%s: median %.0f MiB/s, push %.2f s, finalize %.2f s, producer commit p50 %.0f ms" % (name,
        st.median(v[0] for v in d.values()), st.median(v[1] for v in d.values()),
        st.median(v[2] for v in d.values()), st.median(v[3] for v in d.values()))
    if i > 0:
        rat = [d[r][0] / by[0][r][0] for r in d if r in by[0]]
        line += "; against the first: paired median %+.1f %%, faster in %d of %d" % (100 * (st.median(rat) - 1), sum(x > 1 for x in rat), len(rat))
    print(line)
PY
