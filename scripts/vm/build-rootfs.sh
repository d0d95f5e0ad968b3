#!/usr/bin/env bash
# build-rootfs.sh: build (or reuse) the agentcg VM guest image and print its path.
#
# The image is a Debian sid minbase userland (containerd, runc, docker, CNI
# plugins, crictl) plus the guest config files and PID 1 in scripts/vm/guest/,
# written to $AGENTCG_VM_CACHE/rootfs-<key>.img with mkfs.ext4 -d. <key> hashes
# everything that goes into the image, so editing any of it rebuilds; otherwise
# the cached image is reused. The debootstrap tree is cached separately, keyed
# by the package list only, so config/init edits rebuild in seconds.
# Installed versions go to rootfs-<key>.versions.tsv next to the image.
# The host's apt sources are never touched: debootstrap fetches sid directly.
#
#   build-rootfs.sh [--profile default|systemd]   (default: $AGENTCG_VM_PROFILE or default)
#
# The systemd profile (rootfs-systemd-<key>.img), from the same debootstrap
# tree, adds the kubelet (build-kubelet.sh), guest/systemd/ (units, kubelet config, the
# harness runner) and containerd with SystemdCgroup = true; it boots systemd
# as PID 1 into agentcg.target.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/../.." && pwd)
cache=${AGENTCG_VM_CACHE:-/var/cache/agentcg}
suite=${AGENTCG_VM_SUITE:-sid}
mirror=${AGENTCG_VM_MIRROR:-http://deb.debian.org/debian}
crictl_version=v1.34.0
# A second, newer containerd for the one test that needs NRI's default
# validator (required plugins, containerd >= 2.2); the guest runs Debian's.
containerd_next=v2.2.9
profile=${AGENTCG_VM_PROFILE:-default}
export PATH=/usr/local/go/bin:/usr/sbin:/sbin:$PATH

log() { echo "build-rootfs: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

while [ $# -gt 0 ]; do
	case $1 in
	--profile) profile=$2; shift 2 ;;
	*) die "usage: build-rootfs.sh [--profile default|systemd]" ;;
	esac
done
extra=()   # profile files that go into the key
prefix=    # image name: rootfs-<prefix><key>.img
case $profile in
default) ;;
systemd)
	mapfile -t extra < <(cd "$here" && echo build-kubelet.sh && ls -d guest/systemd/*)
	prefix=systemd-
	kubelet=$("$here/build-kubelet.sh") || die "kubelet build failed"
	;;
*) die "unknown profile $profile (default, systemd)" ;;
esac

packages=$(grep -v '^#' "$here/packages.txt" | grep . | paste -sd, -)
basekey=$(printf '%s\n' "$suite" "$mirror" "$packages" | sha256sum | cut -c1-16)
key=$( {
	printf '%s\n' "$basekey" "$crictl_version" "$containerd_next" "$profile"
	if [ "$profile" = systemd ]; then basename "$kubelet"; fi
	cd "$here" && cat build-rootfs.sh packages.txt guest/vminit guest/config.toml guest/daemon.json guest/crictl.yaml guest/10-agentcg.conflist pause/main.go pauseimage/main.go ../../replayimage/image/image.go ../../replayimage/image/specs.go "${extra[@]}"
} | sha256sum | cut -c1-16)
img=$cache/rootfs-$prefix$key.img

if [ -f "$img" ] && [ -f "${img%.img}.versions.tsv" ]; then
	echo "$img"
	exit 0
fi

mkdir -p "$cache"
exec 9>"$cache/.lock"
flock -n 9 || { log "waiting for another build (lock $cache/.lock)"; flock 9; }
if [ -f "$img" ]; then # another build finished it while we waited
	echo "$img"
	exit 0
fi
start=$(date +%s)
work=$(mktemp -d "$cache/tmp.XXXXXX")
trap 'rm -rf "$work"' EXIT

# 1. The Debian userland, cached by package list.
base=$cache/base-$basekey
if [ ! -f "$base/.done" ]; then
	rm -rf "$base"
	log "debootstrap $suite ($mirror): $packages"
	if ! debootstrap --variant=minbase --include="$packages" "$suite" "$work/base" "$mirror" >"$work/debootstrap.out" 2>&1; then
		tail -n 20 "$work/debootstrap.out" >&2
		dlog=$work/base/debootstrap/debootstrap.log
		[ -f "$dlog" ] && grep -E "Couldn't|E: |dpkg: error|depends on|Errors were" "$dlog" | tail -n 20 >&2
		# Name the package(s) that broke, so a sid regression is easy to report.
		bad=$(grep -ohE "Couldn't find these debs: .*|Couldn't download package [^ ]+|Failure trying to run: .*|dependency problems - leaving unconfigured [^ ]+|error processing package [^ ]+" \
			"$work/debootstrap.out" "$dlog" 2>/dev/null | sort -u | paste -sd';' -)
		die "debootstrap of $suite failed${bad:+: $bad}. Try AGENTCG_VM_SUITE=trixie (containerd 1.7: NRI must be enabled in its config)."
	fi
	rm -f "$work/base/var/cache/apt/archives/"*.deb
	touch "$work/base/.done"
	mv "$work/base" "$base"
	log "debootstrap done in $(($(date +%s) - start)) s"
fi

# 2. crictl (not packaged in Debian), static, from the Go module proxy.
crictl=$cache/crictl-$crictl_version
if [ ! -x "$crictl" ]; then
	log "go install crictl $crictl_version"
	(cd "$work" && CGO_ENABLED=0 GOFLAGS= GOTOOLCHAIN=local GOBIN="$work/gobin" go install \
		-ldflags="-s -w -X sigs.k8s.io/cri-tools/pkg/version.Version=$crictl_version" \
		"sigs.k8s.io/cri-tools/cmd/crictl@$crictl_version") || die "go install crictl failed"
	mv "$work/gobin/crictl" "$crictl"
fi

# 2b. containerd $containerd_next and its runc shim, static, from the Go module
# proxy (TestVMClosedModeRequiredPlugins runs it beside the guest's containerd).
next=$cache/containerd-$containerd_next
if [ ! -x "$next/containerd" ] || [ ! -x "$next/containerd-shim-runc-v2" ]; then
	log "go install containerd $containerd_next"
	(cd "$work" && CGO_ENABLED=0 GOFLAGS= GOTOOLCHAIN=local GOBIN="$work/gobin" go install -trimpath \
		-ldflags="-s -w -X github.com/containerd/containerd/v2/version.Version=${containerd_next#v}" \
		"github.com/containerd/containerd/v2/cmd/containerd@$containerd_next" \
		"github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2@$containerd_next") || die "go install containerd $containerd_next failed"
	rm -rf "$next" && mkdir -p "$next.tmp" && mv "$work/gobin/containerd" "$work/gobin/containerd-shim-runc-v2" "$next.tmp/" && mv "$next.tmp" "$next"
fi

# 3. The static pause image for CRI sandboxes.
(cd "$src" && CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o "$work/pause" ./scripts/vm/pause &&
	go run ./scripts/vm/pauseimage --binary "$work/pause" --out "$work/pause.tar") || die "pause image build failed"

# stage_systemd ROOT: the systemd profile's additions to the staged tree.
stage_systemd() {
	local r=$1 g=$here/guest/systemd u
	install -D -m 0755 "$kubelet" "$r/usr/local/bin/kubelet"
	install -D -m 0644 "$g/kubelet.yaml" "$r/etc/kubernetes/kubelet.yaml"
	mkdir -p "$r/etc/kubernetes/manifests" "$r/var/lib/kubelet"
	install -D -m 0755 "$g/agentcg-run" "$r/usr/local/sbin/agentcg-run"
	for u in kubelet.service agentcg-run.service agentcg.target; do
		install -D -m 0644 "$g/$u" "$r/etc/systemd/system/$u"
	done
	ln -sfn agentcg.target "$r/etc/systemd/system/default.target"
	# The runtime's and the kubelet's cgroup driver is systemd (kubeadm's default).
	sed -i 's/^\( *SystemdCgroup = \)false$/\1true/' "$r/etc/containerd/config.toml"
	grep -q '^ *SystemdCgroup = true$' "$r/etc/containerd/config.toml" || die "SystemdCgroup not set in config.toml"
	# Pods off the host network (the chart's DaemonSet) get probed by the
	# kubelet on their pod IP: the bridge needs an address on the host side.
	sed -i 's/"isGateway": false/"isGateway": true/' "$r/etc/cni/net.d/10-agentcg.conflist"
	grep -q '"isGateway": true' "$r/etc/cni/net.d/10-agentcg.conflist" || die "isGateway not set in the CNI conflist"
	# Units that only cost boot time in a throw-away TCG guest (docker is not
	# used by this profile; the timers and ConditionNeedsUpdate= jobs would
	# run on every boot of the snapshot image; no getty on the harness console).
	for u in docker.service docker.socket apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer \
		fstrim.timer e2scrub_all.timer e2scrub_reap.service systemd-tmpfiles-clean.timer \
		ldconfig.service systemd-journal-catalog-update.service systemd-hwdb-update.service \
		systemd-sysusers.service systemd-firstboot.service systemd-networkd.service \
		systemd-networkd.socket systemd-networkd-wait-online.service systemd-pstore.service \
		serial-getty@ttyS0.service getty@tty1.service console-getty.service modprobe@.service \
		systemd-random-seed.service systemd-remount-fs.service dev-hugepages.mount \
		sys-fs-fuse-connections.mount systemd-journal-flush.service; do
		ln -sfn /dev/null "$r/etc/systemd/system/$u"
	done
	# The journal lives in /run: nothing to flush to disk at boot.
	install -D -m 0644 /dev/stdin "$r/etc/systemd/journald.conf.d/agentcg.conf" <<-EOF
		[Journal]
		Storage=volatile
	EOF
	[ -s "$r/etc/machine-id" ] || die "no /etc/machine-id in the base tree"
	printf '127.0.0.1 localhost\n127.0.1.1 agentcg-vm\n' >"$r/etc/hosts"
}

# 4. Stage: the base tree plus our files. /sbin is a symlink to usr/sbin (gotcha 9).
log "staging"
cp -a "$base" "$work/root"
r=$work/root
rm -f "$r/.done"
install -D -m 0755 "$here/guest/vminit" "$r/usr/sbin/vminit"
install -D -m 0644 "$here/guest/config.toml" "$r/etc/containerd/config.toml"
install -D -m 0644 "$here/guest/daemon.json" "$r/etc/docker/daemon.json"
install -D -m 0644 "$here/guest/crictl.yaml" "$r/etc/crictl.yaml"
install -D -m 0644 "$here/guest/10-agentcg.conflist" "$r/etc/cni/net.d/10-agentcg.conflist"
install -D -m 0755 "$crictl" "$r/usr/local/bin/crictl"
install -D -m 0644 "$work/pause.tar" "$r/usr/local/share/agentcg/pause.tar"
install -D -m 0755 -t "$r/usr/local/lib/agentcg/containerd-$containerd_next" "$next/containerd" "$next/containerd-shim-runc-v2"
mkdir -p "$r/agentcg" "$r/results" "$r/opt/nri/plugins" "$r/etc/nri/conf.d" "$r/var/run/nri"
echo agentcg-vm >"$r/etc/hostname"
: >"$r/etc/fstab"
if [ "$profile" = systemd ]; then
	stage_systemd "$r"
fi

# 5. Versions, for experiments' env.json.
{
	dpkg-query --admindir="$r/var/lib/dpkg" -W -f '${Package}\t${Version}\n'
	printf 'crictl\t%s\n' "$crictl_version"
	printf 'containerd-next\t%s\n' "$containerd_next"
	if [ "$profile" = systemd ]; then printf 'kubelet\t%s\n' "${kubelet##*/kubelet-}"; fi
} >"$work/versions.tsv"
for p in containerd runc docker.io docker-cli; do
	grep -q "^$p	" "$work/versions.tsv" || die "package $p missing from the rootfs"
done

# 6. The ext4 image (sparse). Guests boot it with snapshot=on, so it stays pristine.
log "mkfs.ext4"
mkfs.ext4 -q -F -L vmroot -d "$r" "$work/rootfs.img" 4G >/dev/null
mv "$work/versions.tsv" "${img%.img}.versions.tsv"
mv "$work/rootfs.img" "$img"
# Older images of this profile are no longer needed; a running guest keeps
# its open file. (Default keys are hex, so rootfs-[0-9a-f]* skips rootfs-systemd-*.)
glob=rootfs-[0-9a-f]*.img
[ -n "$prefix" ] && glob=rootfs-$prefix*.img
for old in "$cache"/$glob; do
	[ "$old" = "$img" ] || rm -f "$old" "${old%.img}.versions.tsv"
done
log "built $img in $(($(date +%s) - start)) s"
echo "$img"
