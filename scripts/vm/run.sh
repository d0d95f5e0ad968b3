#!/usr/bin/env bash
# run.sh: run one command as root inside a qemu guest that boots the patched
# kernel with the cached Debian container userland (see README "Running on a
# real kernel"). Output streams to stdout; the exit code is the command's.
#
#   scripts/vm/run.sh [--profile default|systemd] [--mem MB] [--cpus N] [--timeout S]
#                     [--results DIR] [--no-images] [-v] -- CMD ARGS...
#
# Profiles: default (a shell script as PID 1 starts containerd and dockerd;
# cgroupfs driver) and systemd (systemd as PID 1, containerd with
# SystemdCgroup = true, a standalone kubelet with cgroupDriver: systemd that
# runs static pods from /etc/kubernetes/manifests; no dockerd). The default is
# $AGENTCG_VM_PROFILE, else default.
#
# Exit codes: CMD's own; 124 if CMD hit --timeout (guest-side) or the guest
# hit the host-side deadline; 125 if the harness itself failed.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/../.." && pwd)
cache=${AGENTCG_VM_CACHE:-/var/cache/agentcg}

usage() {
	sed -n '6,7p' "$0" | sed 's/^# *//' >&2
	exit 125
}
log() { echo "run.sh: $*" >&2; }

mem=2048 cpus=2 timeout=1800 results= images=1 verbose=0 profile=${AGENTCG_VM_PROFILE:-default}
while [ $# -gt 0 ]; do
	case $1 in
	--profile) profile=$2; shift 2 ;;
	--mem) mem=$2; shift 2 ;;
	--cpus) cpus=$2; shift 2 ;;
	--timeout) timeout=$2; shift 2 ;;
	--results) results=$2; shift 2 ;;
	--no-images) images=0; shift ;;
	-v | --verbose) verbose=1; shift ;;
	--) shift; break ;;
	*) usage ;;
	esac
done
[ $# -gt 0 ] || usage
for n in "$mem" "$cpus" "$timeout"; do
	[[ $n =~ ^[1-9][0-9]*$ ]] || { log "not a positive integer: $n"; exit 125; }
done

# Kernel: $AGENTCG_KERNEL, else this workplace's prebuilt one, else the one
# `make kernel` (scripts/kernel/build.sh) leaves in the cache.
kernel=${AGENTCG_KERNEL:-}
if [ -z "$kernel" ]; then
	for k in "$src/../shared/kernel/bzImage" "$cache/kernel/qemu/bzImage"; do
		[ -f "$k" ] && { kernel=$k; break; }
	done
fi
if [ -z "$kernel" ] || [ ! -f "$kernel" ]; then
	log "no kernel${kernel:+ at $kernel} (looked for \$AGENTCG_KERNEL, ../shared/kernel/bzImage, $cache/kernel/qemu/bzImage)."
	log "Build one with the memcg BPF series: make kernel   (scripts/kernel/README.md), or set AGENTCG_KERNEL=/path/to/bzImage"
	exit 125
fi
command -v qemu-system-x86_64 >/dev/null || { log "qemu-system-x86_64 not installed"; exit 125; }
case $profile in
default) init=/sbin/vminit ;;
# show_status=false: systemd's [ OK ] lines would mix into the command's output.
# A dumb console of fixed size: else systemd probes the terminal with escape
# sequences that land in the output too.
systemd) init="/usr/lib/systemd/systemd systemd.show_status=false systemd.log_level=warning systemd.tty.term.console=dumb systemd.tty.term.ttyS0=dumb systemd.tty.rows.ttyS0=24 systemd.tty.columns.ttyS0=80" ;;
*) log "unknown profile $profile (default, systemd)"; exit 125 ;;
esac

t_start=$(date +%s.%N)
img=$("$here/build-rootfs.sh" --profile "$profile") || { log "rootfs build failed"; exit 125; }

ctl=$(mktemp -d "${TMPDIR:-/tmp}/agentcg-vm.XXXXXX")
qpid=
cleanup() {
	if [ -n "$qpid" ] && kill -0 "$qpid" 2>/dev/null; then
		kill -TERM "$qpid" 2>/dev/null || true
		for _ in 1 2 3 4 5 6 7 8 9 10; do
			kill -0 "$qpid" 2>/dev/null || break
			sleep 0.5
		done
		kill -KILL "$qpid" 2>/dev/null || true
		wait "$qpid" 2>/dev/null || true
	fi
	rm -rf "$ctl"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT
trap 'log "terminated"; exit 143' TERM

# accel: KVM only when a real probe boot succeeds (here /dev/kvm opens, but
# qemu aborts on an MSR assertion), cached per host kernel + qemu + bzImage.
probe_kvm() {
	[ -r /dev/kvm ] && [ -w /dev/kvm ] || return 1
	local id f out
	id=$({ uname -r; qemu-system-x86_64 --version | head -1; stat -c '%s %Y' "$kernel"; } | sha256sum | cut -c1-16)
	f=$cache/kvm-probe-$id
	if [ ! -f "$f" ]; then
		out=$(timeout -k 5 60 qemu-system-x86_64 -accel kvm -cpu host -m 256 -smp 1 -no-reboot \
			-display none -serial stdio -monitor none -kernel "$kernel" \
			-append "console=ttyS0 panic=-1 agentcg.probe" </dev/null 2>&1 || true)
		if grep -q "Linux version" <<<"$out"; then echo kvm >"$f"; else echo tcg >"$f"; fi
	fi
	[ "$(cat "$f")" = kvm ]
}
accel=${AGENTCG_VM_ACCEL:-}
if [ -z "$accel" ]; then
	if probe_kvm; then accel=kvm; else accel=tcg; fi
fi
cpu=max
accel_opt=$accel
[ "$accel" = kvm ] && cpu=host
# Multi-threaded TCG can run a stale translation on one vCPU while the other
# live-patches kernel text (int3-based text_poke_bp): attaching the BPF
# tracepoint program (a static_call update) panicked the guest in
# count_memcg_events during a 200-container churn. One TCG thread for all
# vCPUs makes patching atomic for the guest. AGENTCG_VM_MTTCG=1 opts out.
[ "$accel" = tcg ] && [ "${AGENTCG_VM_MTTCG:-0}" != 1 ] && accel_opt=tcg,thread=single

# The guest init sources env and runs cmd.sh from the ctl share, then writes rc.
{
	echo "export AGENTCG_GUEST=1 AGENTCG_SRC=/agentcg"
	printf 'export AGENTCG_VM_TIMEOUT=%s AGENTCG_VM_IMAGES=%s AGENTCG_VM_VERBOSE=%s AGENTCG_VM_PROFILE=%s\n' "$timeout" "$images" "$verbose" "$profile"
	[ -n "$results" ] && echo "export AGENTCG_RESULTS=/results"
	# Pass the caller's other AGENTCG_* settings through.
	while IFS= read -r v; do
		case $v in AGENTCG_GUEST | AGENTCG_SRC | AGENTCG_RESULTS | AGENTCG_KERNEL | AGENTCG_VM_*) continue ;; esac
		printf 'export %s=%q\n' "$v" "${!v}"
	done < <(compgen -e | grep '^AGENTCG_' || true)
} >"$ctl/env"
{
	printf 'exec'
	printf ' %q' "$@"
	echo
} >"$ctl/cmd.sh"

fsdev() { echo "-fsdev local,id=$1,path=$2,security_model=none,multidevs=remap -device virtio-9p-pci,fsdev=$1,mount_tag=$1"; }
append="console=ttyS0 root=/dev/vda rw rootfstype=ext4 init=$init panic=-1 loglevel=3"
# shellcheck disable=SC2046
set -- $(fsdev src "$src") $(fsdev ctl "$ctl")
if [ -n "$results" ]; then
	mkdir -p "$results"
	results=$(cd "$results" && pwd)
	# shellcheck disable=SC2046
	set -- "$@" $(fsdev results "$results")
	append+=" agentcg.results"
fi

# Host-side deadline: the guest's own timeout plus room for boot, daemons,
# image import and power-off. It only fires when the guest is wedged.
deadline=$((timeout + ${AGENTCG_VM_BOOT_BUDGET:-300}))
[ "$verbose" = 1 ] && log "profile=$profile accel=$accel mem=${mem}M cpus=$cpus timeout=${timeout}s image=$img"
timeout -s TERM -k 10 "$deadline" qemu-system-x86_64 -accel "$accel_opt" -cpu "$cpu" -m "$mem" -smp "$cpus" \
	-no-reboot -display none -serial stdio -monitor none -nodefaults \
	-kernel "$kernel" -append "$append" \
	-drive "file=$img,if=virtio,format=raw,snapshot=on" \
	-device virtio-rng-pci "$@" </dev/null &
qpid=$!
qrc=0
wait "$qpid" || qrc=$?
qpid=
[ "$verbose" = 1 ] && log "qemu exited with $qrc after $(awk -v a="$t_start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }') s"
if [ "$qrc" = 124 ] || [ "$qrc" = 137 ]; then
	log "guest killed at the host-side deadline (${deadline}s)"
	exit 124
fi
if [ ! -s "$ctl/rc" ]; then
	log "guest exited (qemu status $qrc) without reporting the command's exit code"
	exit 125
fi
exit "$(cat "$ctl/rc")"
