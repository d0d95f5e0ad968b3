#!/usr/bin/env bash
# build.sh: build a Linux kernel with the memcg BPF struct_ops series (RFC v6,
# Hui Zhu, <cover.1770194182.git.zhuhui@kylinos.cn>). See README.md.
#
#   scripts/kernel/build.sh [--profile qemu|node] [--patches DIR | --msgid ID | --mbox FILE]
#                           [--source debian|DIR|TARBALL|URL] [--base-config debian-cloud|debian-generic|FILE]
#                           [--port auto|none] [--jobs N] [--cache DIR] [--config-only]
#
# qemu: bzImage for scripts/vm/run.sh, everything built in (x86_64_defconfig +
#       common.config + qemu.config). Output: $cache/kernel/qemu/bzImage.
# node: Debian packages from `make bindeb-pkg` for a real node, modules and
#       Debian's own 7.3 config + common.config + node.config.
#       Output: $cache/kernel/node/*.deb.
# Nothing is written into the repository; $cache defaults to
# $AGENTCG_VM_CACHE or /var/cache/agentcg.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/../.." && pwd)

# The Debian source package the series was ported on. trixie-backports keeps
# only its newest version: when it moves on, pass --deb-version (the port is
# re-checked by port-7.3.sh) or point --mirror at snapshot.debian.org.
deb_version=${AGENTCG_KERNEL_DEB_VERSION:-7.3.4-1~bpo13+1}
deb_suite=${AGENTCG_KERNEL_DEB_SUITE:-trixie-backports}
mirror=${AGENTCG_KERNEL_MIRROR:-http://deb.debian.org/debian}
cover_msgid=cover.1770194182.git.zhuhui@kylinos.cn
lore=${AGENTCG_KERNEL_LORE:-https://lore.kernel.org/all}

profile=qemu patches= msgid= mbox= source=debian base_config=debian-cloud port=auto
jobs=$(nproc) cache=${AGENTCG_VM_CACHE:-/var/cache/agentcg} config_only=0
usage() {
	sed -n '5,7p' "$0" | sed 's/^# *//' >&2
	exit 2
}
log() { echo "kernel: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

while [ $# -gt 0 ]; do
	case $1 in
	--profile) profile=$2; shift 2 ;;
	--patches) patches=$2; shift 2 ;;
	--msgid) msgid=$2; shift 2 ;;
	--mbox) mbox=$2; shift 2 ;;
	--source) source=$2; shift 2 ;;
	--base-config) base_config=$2; shift 2 ;;
	--deb-version) deb_version=$2; shift 2 ;;
	--mirror) mirror=$2; shift 2 ;;
	--port) port=$2; shift 2 ;;
	--jobs) jobs=$2; shift 2 ;;
	--cache) cache=$2; shift 2 ;;
	--config-only) config_only=1; shift ;;
	-h | --help) usage ;;
	*) log "unknown argument: $1"; usage ;;
	esac
done
case $profile in qemu | node) ;; *) die "--profile: want qemu or node, got '$profile'" ;; esac
case $port in auto | none) ;; *) die "--port: want auto or none, got '$port'" ;; esac
[[ $jobs =~ ^[1-9][0-9]*$ ]] || die "--jobs: not a positive integer: $jobs"
n=0
for s in "$patches" "$msgid" "$mbox"; do [ -n "$s" ] && n=$((n + 1)); done
[ $n -le 1 ] || die "give one of --patches, --msgid, --mbox"
if [ $n -eq 0 ]; then
	# The offline copy of this workplace when present, else the list archive.
	if [ -d "$src/../shared/kernel/patches" ]; then
		patches=$(cd "$src/../shared/kernel/patches" && pwd)
	else
		msgid=$cover_msgid
	fi
fi

# Bad paths fail now, not after waiting for the lock.
[ -z "$patches" ] || [ -d "$patches" ] || die "--patches: not a directory: $patches"
[ -z "$mbox" ] || [ -f "$mbox" ] || die "--mbox: no such file: $mbox"
case $source in debian | http://* | https://*) ;; *) [ -e "$source" ] || die "--source: no such file or directory: $source" ;; esac
case $base_config in debian-cloud | debian-generic) ;; *) [ -f "$base_config" ] || die "--base-config: want debian-cloud, debian-generic or a file; no such file: $base_config" ;; esac

kdir=$cache/kernel
mkdir -p "$kdir"
kdir=$(cd "$kdir" && pwd)
exec 8>"$kdir/.lock-$profile"
flock -n 8 || { log "waiting for another $profile build (lock $kdir/.lock-$profile)"; flock 8; }
t0=$(date +%s)

# --- 0. host tools -----------------------------------------------------------
need=()
for t in gcc:build-essential make:build-essential flex:flex bison:bison bc:bc \
	pahole:dwarves perl:perl python3:python3 git:git xz:xz-utils cpio:cpio \
	rsync:rsync patch:patch; do
	command -v "${t%%:*}" >/dev/null || need+=("${t#*:}")
done
[ -e /usr/include/libelf.h ] || need+=(libelf-dev)
[ -e /usr/include/openssl/ssl.h ] || need+=(libssl-dev)
if [ "$profile" = node ]; then
	for t in dpkg-buildpackage:dpkg-dev dh_testdir:debhelper kmod:kmod fakeroot:fakeroot; do
		command -v "${t%%:*}" >/dev/null || need+=("${t#*:}")
	done
fi
if [ "$source" = debian ]; then
	command -v apt-get >/dev/null || die "--source debian needs apt-get; use --source DIR|TARBALL|URL"
	[ -e /usr/share/keyrings/debian-archive-keyring.gpg ] || need+=(debian-archive-keyring)
fi
if [ ${#need[@]} -gt 0 ]; then
	mapfile -t need < <(printf '%s\n' "${need[@]}" | sort -u)
	[ "$(id -u)" -eq 0 ] || die "missing host packages: ${need[*]} (apt-get install ${need[*]})"
	log "installing ${need[*]}"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null ||
		die "apt-get install ${need[*]} failed"
fi
pv=$(pahole --version | tr -dc '0-9.' | sed 's/^\.*//')
[ "$(printf '%s\n' 1.22 "$pv" | sort -V | head -1)" = 1.22 ] || die "pahole $pv is older than 1.22, which DEBUG_INFO_BTF on 7.3 needs"

# --- 1. kernel source --------------------------------------------------------
# Debian's packages are fetched with a private apt state under $kdir/apt: the
# host's sources.list is never touched.
apt_private() { # apt-get|apt-cache ARGS...
	local a=$kdir/apt tool=$1
	shift
	mkdir -p "$a/lists/partial" "$a/archives/partial"
	echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror $deb_suite main" >"$a/sources.list"
	"$tool" -q -o Dir::Etc::SourceList="$a/sources.list" -o Dir::Etc::SourceParts=/dev/null \
		-o Dir::State::Lists="$a/lists" -o Dir::Cache="$a" -o Dir::Cache::archives="$a/archives" \
		-o Dir::Etc::Preferences=/dev/null -o Dir::Etc::PreferencesParts=/dev/null \
		-o APT::Sandbox::User=root "$@"
}
debian_fetch() { # PACKAGE: download PACKAGE=$deb_version into $kdir/dl, print the .deb
	local pkg=$1 f
	f=$(ls "$kdir/dl/${pkg}_${deb_version//:/%3a}_"*.deb 2>/dev/null | head -1 || true)
	if [ -z "$f" ]; then
		mkdir -p "$kdir/dl" "$kdir/apt"
		if [ ! -f "$kdir/apt/.updated-$deb_suite" ] || ! apt_private apt-cache show "$pkg=$deb_version" >/dev/null 2>&1; then
			log "apt-get update ($mirror $deb_suite, private state in $kdir/apt)"
			apt_private apt-get update >"$kdir/apt/update.log" 2>&1 || { tail -n 5 "$kdir/apt/update.log" >&2; die "apt-get update of $deb_suite failed"; }
			touch "$kdir/apt/.updated-$deb_suite"
		fi
		if ! apt_private apt-cache show "$pkg=$deb_version" >/dev/null 2>&1; then
			have=$(apt_private apt-cache madison "$pkg" 2>/dev/null | awk -F'|' '{gsub(/ /,"",$2); print $2}' | paste -sd' ' -)
			die "$pkg=$deb_version is not in $deb_suite (it has: ${have:-nothing}). Use --deb-version VERSION (port-7.3.sh re-checks the port), or --mirror http://snapshot.debian.org/archive/debian/<date> for the old version"
		fi
		log "downloading $pkg=$deb_version"
		(cd "$kdir/dl" && apt_private apt-get download "$pkg=$deb_version" >/dev/null 2>&1) || die "apt-get download $pkg=$deb_version failed"
		f=$(ls "$kdir/dl/${pkg}_"*.deb | head -1)
	fi
	echo "$f"
}

case $source in
debian)
	tarball=$kdir/dl/linux-source-7.3_${deb_version}.tar.xz
	if [ ! -f "$tarball" ]; then
		deb=$(debian_fetch linux-source-7.3)
		dpkg-deb --fsys-tarfile "$deb" | tar -xO ./usr/src/linux-source-7.3.tar.xz >"$tarball.tmp"
		mv "$tarball.tmp" "$tarball"
		rm -f "$deb" # the tarball is all we keep (160 MiB)
	fi
	source_id="debian linux-source-7.3 $deb_version"
	;;
http://* | https://*)
	tarball=$kdir/dl/$(basename "$source")
	if [ ! -f "$tarball" ]; then
		mkdir -p "$kdir/dl"
		log "downloading $source"
		curl -fsSL -o "$tarball.tmp" "$source" || die "download of $source failed"
		mv "$tarball.tmp" "$tarball"
	fi
	source_id="$source"
	;;
*)
	[ -e "$source" ] || die "--source: no such file or directory: $source"
	tarball=$(cd "$(dirname "$source")" && pwd)/$(basename "$source")
	source_id="$tarball"
	;;
esac

# --- 2. the series -----------------------------------------------------------
series=$(mktemp -d "$kdir/series.XXXXXX")
trap 'rm -rf "$series"' EXIT
if [ -n "$patches" ]; then
	[ -d "$patches" ] || die "--patches: not a directory: $patches"
	shopt -s nullglob
	files=("$patches"/*.patch)
	shopt -u nullglob
	[ ${#files[@]} -gt 0 ] || die "--patches: no *.patch files in $patches"
	cp "${files[@]}" "$series/"
	series_id="patches $(cd "$patches" && pwd) ($(cat "${files[@]}" | sha256sum | cut -c1-12))"
	raw=0
else
	if [ -n "$msgid" ]; then
		msgid=${msgid#<}
		msgid=${msgid%>}
		url="$lore/$msgid/t.mbox.gz"
		log "fetching the thread $url"
		curl -fsSL -o "$series/t.mbox.gz" "$url" || die "download of $url failed (offline? use --patches DIR)"
		mbox=$series/t.mbox.gz
		series_id="lore $msgid"
	else
		[ -f "$mbox" ] || die "--mbox: no such file: $mbox"
		series_id="mbox $(cd "$(dirname "$mbox")" && pwd)/$(basename "$mbox")"
	fi
	mkdir -p "$series/raw"
	python3 "$here/series.py" "$mbox" "$series/raw" >"$series/list" || die "no usable series in $mbox"
	sed 's/^/kernel:   /' "$series/list" >&2
	mv "$series"/raw/*.patch "$series/"
	series_id="$series_id ($(cat "$series"/*.patch | sha256sum | cut -c1-12))"
	raw=1
fi
if [ "$port" = auto ]; then
	# A raw series (mbox/lore) targets bpf-next; on a 7.3 tree it needs the port.
	if [ $raw -eq 1 ]; then port=7.3; else port=none; fi
fi

# --- 3. patched tree, one per (source, series, port) -------------------------
key=$( {
	echo "$source_id" "$port"
	cat "$series"/*.patch
	[ "$port" = none ] || cat "$here/port-7.3.sh"
} | sha256sum | cut -c1-16)
tree=$kdir/tree-$key
# Both profiles share the tree (each builds with its own O= directory).
exec 7>"$kdir/.lock-tree-$key"
flock -n 7 || { log "waiting for another build preparing $tree"; flock 7; }
if [ ! -f "$tree/.agentcg-done" ]; then
	rm -rf "$tree"
	mkdir -p "$tree"
	log "unpacking $source_id into $tree"
	if [ -d "$tarball" ]; then
		cp -a "$tarball/." "$tree/"
	else
		tar -xf "$tarball" -C "$tree" --strip-components=1
	fi
	[ -f "$tree/Makefile" ] && [ -d "$tree/mm" ] || die "$source_id does not look like a kernel tree"
	GIT=(git -C "$tree" -c user.name=agentcg-kernel -c user.email=kernel@agentcg.invalid -c gc.auto=0)
	"${GIT[@]}" init -q
	# Debian's linux-source .gitignore ignores everything at the top level: -f.
	"${GIT[@]}" add -f -A
	"${GIT[@]}" commit -q -m "base: $source_id"
	if [ "$port" = none ]; then
		log "applying $(ls "$series"/*.patch | wc -l) patches with git am -3"
		if ! "${GIT[@]}" am -q -3 "$series"/*.patch; then
			"${GIT[@]}" am --abort || true
			die "the series does not apply to $source_id (a raw lore series needs --port auto on a 7.3 tree)"
		fi
	else
		"$here/port-$port.sh" "$tree" "$series"/*.patch || die "port of the series to $source_id failed"
	fi
	touch "$tree/.agentcg-done"
fi
flock -u 7
head=$(git -C "$tree" rev-parse --short HEAD)
[ -f "$tree/mm/bpf_memcontrol.c" ] || die "$tree has no mm/bpf_memcontrol.c: the patches are not the memcg BPF series"

# --- 4. config: base + fragments (merge_config.sh) + olddefconfig ------------
build=$kdir/build-$profile-$key
mkdir -p "$build"
frags=("$here/common.config" "$here/$profile.config")
K=(make -C "$tree" O="$build" LOCALVERSION=)
if [ "$profile" = qemu ]; then
	"${K[@]}" -s x86_64_defconfig
	base_id=x86_64_defconfig
else
	case $base_config in
	debian-cloud | debian-generic)
		flavour=amd64
		[ "$base_config" = debian-cloud ] && flavour=cloud-amd64
		cdeb=$(debian_fetch linux-config-7.3)
		dpkg-deb --fsys-tarfile "$cdeb" | tar -xO "./usr/src/linux-config-7.3/config.amd64_none_$flavour.xz" | xz -d >"$build/.config"
		base_id="Debian linux-config-7.3 $deb_version config.amd64_none_$flavour"
		;;
	*)
		[ -f "$base_config" ] || die "--base-config: want debian-cloud, debian-generic or a file; no such file: $base_config"
		cp "$base_config" "$build/.config"
		base_id="$base_config"
		;;
	esac
fi
cp "$build/.config" "$build/base.config"
# "=m" in a fragment means "at least a module": a base that builds the
# driver in keeps it built in (no initramfs surprises).
mkdir -p "$build/fragments"
merged=()
for f in "${frags[@]}"; do
	awk -v base="$build/base.config" '
		BEGIN { while ((getline l < base) > 0) if (l ~ /^CONFIG_[A-Za-z0-9_]+=y$/) { split(l, a, "="); y[a[1]] = 1 } }
		/^CONFIG_[A-Za-z0-9_]+=m$/ { split($0, a, "="); if (a[1] in y) next }
		{ print }' "$f" >"$build/fragments/${f##*/}"
	merged+=("$build/fragments/${f##*/}")
done
(cd "$tree" && scripts/kconfig/merge_config.sh -m -O "$build" "$build/base.config" "${merged[@]}") >"$build/merge.log" 2>&1 ||
	{ tail -n 20 "$build/merge.log" >&2; die "merge_config.sh failed"; }
"${K[@]}" -s olddefconfig

# Every line of the fragments must survive olddefconfig: a symbol whose
# dependencies are missing is silently dropped by kconfig.
bad=()
while IFS= read -r line; do
	case $line in
	CONFIG_*=*)
		sym=${line%%=*} want=${line#*=}
		got=$(grep -E "^$sym=" "$build/.config" | head -1 | cut -d= -f2- || true)
		if [ "$want" = m ]; then [[ $got == [my] ]] || bad+=("$sym=$want (got ${got:-unset})"); continue; fi
		[ "$got" = "$want" ] || bad+=("$sym=$want (got ${got:-unset})")
		;;
	"# CONFIG_"*" is not set")
		sym=${line#\# }
		sym=${sym%% *}
		! grep -qE "^$sym=[ym]" "$build/.config" || bad+=("$sym off (got $(grep -E "^$sym=" "$build/.config" | cut -d= -f2-))")
		;;
	esac
done < <(cat "${frags[@]}")
[ ${#bad[@]} -eq 0 ] || die "options that did not resolve in $build/.config: ${bad[*]}"
log "config: $base_id + ${frags[*]##*/}: all $(grep -hcE '^CONFIG_|^# CONFIG_.* is not set' "${frags[@]}" | paste -sd+ - | bc) fragment lines resolved ($build/.config)"
if [ $config_only -eq 1 ]; then
	log "--config-only: stopping before the build"
	exit 0
fi

# --- 5. build ----------------------------------------------------------------
out=$kdir/$profile
mkdir -p "$out"
log "building ($profile, make -j$jobs, nice -n 10); log: $build/build.log"
tb=$(date +%s)
if [ "$profile" = qemu ]; then
	nice -n 10 "${K[@]}" -j"$jobs" bzImage >"$build/build.log" 2>&1 ||
		{ tail -n 30 "$build/build.log" >&2; die "make bzImage failed (log: $build/build.log)"; }
else
	# bindeb-pkg writes the .debs next to the tree; no -dbg package.
	rm -f "$kdir"/linux-*.deb "$kdir"/linux-upstream_* "$kdir"/*.buildinfo "$kdir"/*.changes
	DEB_BUILD_PROFILES=pkg.linux-upstream.nokerneldbg \
		nice -n 10 "${K[@]}" -j"$jobs" bindeb-pkg >"$build/build.log" 2>&1 ||
		{ tail -n 30 "$build/build.log" >&2; die "make bindeb-pkg failed (log: $build/build.log)"; }
fi
tbuild=$(($(date +%s) - tb))

# The series' type must be in the kernel's BTF, else BPF mode cannot attach.
pahole -F btf -C memcg_bpf_ops "$build/vmlinux" >"$build/memcg_bpf_ops.btf" 2>/dev/null && grep -q get_high_delay_ms "$build/memcg_bpf_ops.btf" ||
	die "the BTF of $build/vmlinux has no struct memcg_bpf_ops"
release=$(cat "$build/include/config/kernel.release")

rm -rf "$out.new"
mkdir -p "$out.new"
cp "$build/.config" "$out.new/config"
cp "$build/memcg_bpf_ops.btf" "$out.new/"
if [ "$profile" = qemu ]; then
	cp "$build/arch/x86/boot/bzImage" "$out.new/bzImage"
else
	mv "$kdir"/linux-image-"$release"_*.deb "$kdir"/linux-headers-"$release"_*.deb "$kdir"/linux-libc-dev_*.deb "$out.new/" 2>/dev/null || true
	ls "$out.new"/linux-image-*.deb >/dev/null 2>&1 || die "bindeb-pkg produced no linux-image .deb in $kdir"
	rm -f "$kdir"/linux-upstream_* "$kdir"/*.buildinfo "$kdir"/*.changes
fi
cat >"$out.new/build-info.txt" <<EOF
profile:      $profile
release:      $release
source:       $source_id
series:       $series_id
port:         $port
tree:         $tree (HEAD $head)
config:       $base_id + ${frags[*]##*/}
built:        $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(hostname), make -j$jobs under nice -n 10
build time:   ${tbuild} s (load average at the end: $(cut -d' ' -f1-3 /proc/loadavg))
EOF
# One line per build, so a later no-op rebuild does not hide how long the
# full one took.
printf '%s\t%s\t%s\t%s s\tload %s\t%s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$profile" "$release" "$tbuild" \
	"$(cut -d' ' -f1-3 /proc/loadavg)" "$series_id" >>"$kdir/builds.tsv"
rm -rf "$out.old"
[ -d "$out" ] && mv "$out" "$out.old"
mv "$out.new" "$out"
rm -rf "$out.old"
log "release $release, build ${tbuild} s, total $(($(date +%s) - t0)) s; BTF has struct memcg_bpf_ops"
if [ "$profile" = qemu ]; then
	log "bzImage: $out/bzImage (scripts/vm/run.sh picks it up when ../shared/kernel/bzImage is absent)"
	echo "$out/bzImage"
else
	log "packages: $(ls "$out"/*.deb | paste -sd' ' -)"
	ls "$out"/*.deb
fi
