#!/usr/bin/env bash
# experiment.sh: `make experiment`. Runs `agentcg experiment run` on this
# host when it can (root, cgroup v2 memory controller, memcg_bpf_ops, a
# container runtime), otherwise inside the VM (scripts/vm/run.sh) with the
# results shared back under results/<id>/.
#
#   scripts/experiment.sh [--vm|--host] [agentcg experiment run flags...]
#
# VM mode defaults (TCG first-touch is ~250 MB/s, so the scenario is scaled
# down until the solo replay keeps up; the report checks and states it):
#   --mem-scale ${AGENTCG_EXP_MEM_SCALE:-0.05} (HIGH's 4.06 GB spike ramps in ~1 s at speed 10:
#   ~200 MB/s scaled, under TCG's ~250 MB/s), VM memory ${AGENTCG_EXP_VM_MEM:-3072} MB,
#   guest timeout ${AGENTCG_EXP_TIMEOUT:-14400} s. Flags given here win.
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
has_flag --mem-scale "$@" || args+=(--mem-scale "${AGENTCG_EXP_MEM_SCALE:-0.05}")
mkdir -p results
exec scripts/vm/run.sh --mem "${AGENTCG_EXP_VM_MEM:-3072}" --cpus 2 --timeout "${AGENTCG_EXP_TIMEOUT:-14400}" --results results -- \
	/agentcg/bin/agentcg experiment run --out /results --trace-dir /agentcg/replayimage/traces --quiet "${args[@]}"
