#!/usr/bin/env bash
# Starts a standalone Sluice on this host: one manager and one worker over
# the given data directories, in the background, logs and pid files in
# $SLUICE_RUN (default /var/run/sluice). Stop with: start.sh stop
#
#   deploy/start.sh /data/1/sluice /data/2/sluice      start
#   deploy/start.sh stop                                stop (SIGTERM, graceful)
#   deploy/start.sh --dry-run /data/1/sluice            print the commands, run nothing
#
# SLUICE (default: sluice on $PATH) is the binary; MANAGER_HOST the manager
# the worker joins (default: this host, i.e. start the manager here too).
set -euo pipefail

SLUICE="${SLUICE:-sluice}"
RUN="${SLUICE_RUN:-/var/run/sluice}"
MANAGER_HOST="${MANAGER_HOST:-}"

dry=false
if [ "${1:-}" = "--dry-run" ]; then
	dry=true
	shift
fi

if [ "${1:-}" = "stop" ]; then
	for p in worker manager; do
		if [ -f "$RUN/$p.pid" ]; then
			kill -TERM "$(cat "$RUN/$p.pid")" 2>/dev/null || true
			rm -f "$RUN/$p.pid"
		fi
	done
	exit 0
fi

if [ $# -eq 0 ]; then
	echo "usage: $0 [--dry-run] DATA_DIR... | stop" >&2
	exit 2
fi
dirs=$(IFS=,; echo "$*")

manager_args=(manager --listen :7450 --metrics-listen :7451)
worker_args=(worker --data-dirs "$dirs" --listen :7452 --metrics-listen :7453 --managers "${MANAGER_HOST:-127.0.0.1}:7450")

run() { # name, args...
	local name=$1
	shift
	if $dry; then
		echo "$SLUICE $*"
		return
	fi
	mkdir -p "$RUN"
	nohup "$SLUICE" "$@" >>"$RUN/$name.log" 2>&1 &
	echo $! >"$RUN/$name.pid"
	echo "started sluice $name (pid $!, log $RUN/$name.log)"
}

if [ -z "$MANAGER_HOST" ]; then
	run manager "${manager_args[@]}"
fi
run worker "${worker_args[@]}"
