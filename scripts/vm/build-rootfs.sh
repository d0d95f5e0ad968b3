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
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/../.." && pwd)
cache=${AGENTCG_VM_CACHE:-/var/cache/agentcg}
suite=${AGENTCG_VM_SUITE:-sid}
mirror=${AGENTCG_VM_MIRROR:-http://deb.debian.org/debian}
crictl_version=v1.34.0
export PATH=/usr/local/go/bin:/usr/sbin:/sbin:$PATH

log() { echo "build-rootfs: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

packages=$(grep -v '^#' "$here/packages.txt" | grep . | paste -sd, -)
basekey=$(printf '%s\n' "$suite" "$mirror" "$packages" | sha256sum | cut -c1-16)
key=$( {
	printf '%s\n' "$basekey" "$crictl_version"
	cd "$here" && cat build-rootfs.sh packages.txt guest/vminit guest/config.toml guest/daemon.json guest/crictl.yaml guest/10-agentcg.conflist pause/main.go pauseimage/main.go ../../replayimage/image/image.go ../../replayimage/image/specs.go
} | sha256sum | cut -c1-16)
img=$cache/rootfs-$key.img

if [ -f "$img" ] && [ -f "$cache/rootfs-$key.versions.tsv" ]; then
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

# 3. The static pause image for CRI sandboxes.
(cd "$src" && CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o "$work/pause" ./scripts/vm/pause &&
	go run ./scripts/vm/pauseimage --binary "$work/pause" --out "$work/pause.tar") || die "pause image build failed"

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
mkdir -p "$r/agentcg" "$r/results" "$r/opt/nri/plugins" "$r/etc/nri/conf.d" "$r/var/run/nri"
echo agentcg-vm >"$r/etc/hostname"
: >"$r/etc/fstab"

# 5. Versions, for experiments' env.json.
{
	dpkg-query --admindir="$r/var/lib/dpkg" -W -f '${Package}\t${Version}\n'
	printf 'crictl\t%s\n' "$crictl_version"
} >"$work/versions.tsv"
for p in containerd runc docker.io docker-cli; do
	grep -q "^$p	" "$work/versions.tsv" || die "package $p missing from the rootfs"
done

# 6. The ext4 image (sparse). Guests boot it with snapshot=on, so it stays pristine.
log "mkfs.ext4"
mkfs.ext4 -q -F -L vmroot -d "$r" "$work/rootfs.img" 4G >/dev/null
mv "$work/versions.tsv" "$cache/rootfs-$key.versions.tsv"
mv "$work/rootfs.img" "$img"
# Older images are no longer needed; a running guest keeps its open file.
for old in "$cache"/rootfs-*.img; do
	[ "$old" = "$img" ] || rm -f "$old" "${old%.img}.versions.tsv"
done
log "built $img in $(($(date +%s) - start)) s"
echo "$img"
