#!/usr/bin/env bash
# selftest.sh [--profile default|systemd]: host-side checks of run.sh itself
# (called by vmtest.sh), in one guest profile.
#  1. exit codes pass through (`exit 7` gives 7);
#  2. a hanging command is killed at --timeout: run.sh exits 124;
#  3. a wedged guest is killed at the host-side deadline: run.sh exits 124;
#  4. SIGTERM to run.sh during boot ends it;
# and after each, no qemu process started by that run is left.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
profile=default
[ "${1:-}" = --profile ] && profile=$2
export AGENTCG_VM_PROFILE=$profile
tmp=$(mktemp -d /tmp/agentcg-selftest.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
fail=0

# leftovers DIR: qemu processes whose command line names DIR (each run gets its
# own TMPDIR, which holds its ctl share).
leftovers() {
	local p
	for p in $(pgrep -x qemu-system-x86 || true) $(pgrep -f '^qemu-system-x86_64 ' || true); do
		tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | grep -qF "$1" && echo "$p"
	done | sort -u
}

# check NAME WANT_RC RC DIR
check() {
	local left
	left=$(leftovers "$4")
	if [ "$3" != "$2" ] || [ -n "$left" ]; then
		echo "--- selftest[$profile] $1: FAIL (exit $3, want $2; qemu left: ${left:-none})"
		fail=1
	else
		echo "--- selftest[$profile] $1: PASS (exit $3, no qemu left)"
	fi
}

run() { # run NAME [run.sh args...]: run.sh with its own TMPDIR
	local d=$tmp/$1
	shift
	mkdir -p "$d"
	TMPDIR=$d "$here/run.sh" "$@"
}

rc=0; run exitcode --no-images --mem 512 -- sh -c 'exit 7' || rc=$?
check exitcode 7 "$rc" "$tmp/exitcode"

rc=0; s=$(date +%s)
run timeout --no-images --mem 512 --timeout 5 -- sleep 100000 || rc=$?
check "timeout (guest-side, $(($(date +%s) - s)) s)" 124 "$rc" "$tmp/timeout"

rc=0; s=$(date +%s)
AGENTCG_VM_BOOT_BUDGET=3 run deadline --no-images --mem 512 --timeout 1 -- sleep 100000 || rc=$?
check "deadline (host-side, $(($(date +%s) - s)) s)" 124 "$rc" "$tmp/deadline"

mkdir -p "$tmp/sigterm"
TMPDIR=$tmp/sigterm "$here/run.sh" --no-images --mem 512 -- sleep 100000 &
pid=$!
sleep 4
kill -TERM "$pid"
rc=0; wait "$pid" || rc=$?
check sigterm 143 "$rc" "$tmp/sigterm"
exit $fail
