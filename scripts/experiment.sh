#!/usr/bin/env bash
# experiment.sh: `make experiment`. Runs `agentcg experiment run` on this
# host when it can (root, cgroup v2 memory controller, memcg_bpf_ops, a
# container runtime), otherwise inside the VM (scripts/vm/run.sh) with the
# results shared back under results/<id>/.
#
#   scripts/experiment.sh [--vm|--host] [agentcg experiment run flags...]
#
# VM mode: the experiment calibrates its memory scale from the guest's
# first-touch rate (give --mem-scale, or AGENTCG_EXP_MEM_SCALE, to fix it),
# prints progress lines with ETAs on this terminal, and records this host's
# load average (TCG timing depends on it). VM memory
# ${AGENTCG_EXP_VM_MEM:-3072} MB, guest timeout ${AGENTCG_EXP_TIMEOUT:-14400} s.
# Flags given here win.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/.." && pwd)
cd "$src"
log() { echo "experiment.sh: $*" >&2; }

mode=auto
case ${1:-} in
--vm) mode=vm; shift ;;
--host) mode=host; shift ;;
esac

host_capable() {
	[ "$(id -u)" = 0 ] || { log "host: not root"; return 1; }
	grep -qw memory /sys/fs/cgroup/cgroup.controllers 2>/dev/null || { log "host: no cgroup v2 memory controller"; return 1; }
	bin/agentcg probe >/dev/null 2>&1 || { log "host: kernel lacks memcg_bpf_ops (bin/agentcg probe)"; return 1; }
	[ -S /run/containerd/containerd.sock ] || [ -S /var/run/docker.sock ] || { log "host: no containerd or docker socket"; return 1; }
}

[ -x bin/agentcg ] || { log "bin/agentcg missing: run make build"; exit 2; }
if [ "$mode" = auto ]; then
	if host_capable; then mode=host; else mode=vm; fi
fi

has_flag() {
	local f=$1; shift
	for a in "$@"; do case $a in "$f" | "$f"=*) return 0 ;; esac; done
	return 1
}

if [ "$mode" = host ]; then
	log "running on this host"
	exec bin/agentcg experiment run "$@"
fi

log "running in the VM (results come back under results/)"
[ -f build/agentcg-replay.tar ] || { log "build/agentcg-replay.tar missing: run make image"; exit 2; }
args=("$@")
if ! has_flag --mem-scale "$@" && [ -n "${AGENTCG_EXP_MEM_SCALE:-}" ]; then
	args+=(--mem-scale "$AGENTCG_EXP_MEM_SCALE")
fi
has_flag --progress "$@" || has_flag --quiet "$@" || args+=(--progress lines)
# The guest sees the checkout at /agentcg: a --trace-dir inside it is
# mapped there; one outside it is copied into build/trace-dir (shared with
# the guest).
trace_dir=/agentcg/replayimage/traces
trace_dir_given=0 resume=""
for ((i = 0; i < ${#args[@]}; i++)); do
	case ${args[i]} in
	--trace-dir) trace_dir=${args[i + 1]}; trace_dir_given=1; unset 'args[i]' 'args[i+1]'; i=$((i + 1)) ;;
	--trace-dir=*) trace_dir=${args[i]#--trace-dir=}; trace_dir_given=1; unset 'args[i]' ;;
	# The host's results/ is the guest's /results: resume the same folder there.
	--resume) resume=${args[i + 1]}; unset 'args[i]' 'args[i+1]'; i=$((i + 1)) ;;
	--resume=*) resume=${args[i]#--resume=}; unset 'args[i]' ;;
	esac
done
args=("${args[@]}")
if [ -n "$resume" ]; then
	[ -f "$resume/config.json" ] || { log "--resume $resume: no config.json there (a folder under results/)"; exit 2; }
	args+=(--resume "/results/$(basename "$resume")")
fi
if [ "$trace_dir" != /agentcg/replayimage/traces ]; then
	abs=$(cd "$trace_dir" && pwd) || { log "--trace-dir $trace_dir: no such folder"; exit 2; }
	case $abs in
	"$src"/*) trace_dir=/agentcg/${abs#"$src"/} ;;
	*)
		# Outside the checkout: copy it into build/ (shared with the guest).
		rm -rf build/trace-dir && mkdir -p build && cp -r "$abs" build/trace-dir
		trace_dir=/agentcg/build/trace-dir
		;;
	esac
fi
mkdir -p results
export AGENTCG_HOST_LOADAVG="$(cut -d' ' -f1-3 /proc/loadavg)"
log "host load average $AGENTCG_HOST_LOADAVG (TCG timing depends on it)"
# A resumed experiment keeps the trace folder in its config.json unless one
# is given again.
if [ -z "$resume" ] || [ "$trace_dir_given" = 1 ]; then
	args+=(--trace-dir "$trace_dir")
fi
exec scripts/vm/run.sh --mem "${AGENTCG_EXP_VM_MEM:-3072}" --cpus 2 --timeout "${AGENTCG_EXP_TIMEOUT:-14400}" --results results -- \
	/agentcg/bin/agentcg experiment run --out /results "${args[@]}"
