#!/usr/bin/env bash
# build-kubelet.sh: build (or reuse) a static kubelet from k8s.io/kubernetes at
# a pinned release, through the Go module proxy, and print its path.
#
#   scripts/vm/build-kubelet.sh [VERSION]     (default: $AGENTCG_KUBELET_VERSION or v1.36.3)
#
# The result is $AGENTCG_VM_CACHE/kubelet-<version> (CGO_ENABLED=0, stripped),
# built once under `nice -n 10` and reused; the build time goes to
# kubelet-<version>.buildtime next to it. k8s.io/kubernetes cannot be
# `go install`ed directly: its go.mod replaces the k8s.io/* staging modules
# with ./staging paths that the module zip does not serve. So the build module
# here requires k8s.io/kubernetes and pins every staging module it replaces to
# the published v0.<minor>.<patch> of the same release.
set -euo pipefail
cache=${AGENTCG_VM_CACHE:-/var/cache/agentcg}
version=${1:-${AGENTCG_KUBELET_VERSION:-v1.36.3}}
export PATH=/usr/local/go/bin:$PATH

log() { echo "build-kubelet: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[[ $version =~ ^v1\.([0-9]+)\.([0-9]+)$ ]] || die "version $version is not v1.<minor>.<patch>"
minor=${BASH_REMATCH[1]}
staging=v0.$minor.${BASH_REMATCH[2]}
out=$cache/kubelet-$version
if [ -x "$out" ]; then
	echo "$out"
	exit 0
fi

mkdir -p "$cache"
exec 9>"$cache/.kubelet.lock"
flock -n 9 || { log "waiting for another kubelet build (lock $cache/.kubelet.lock)"; flock 9; }
if [ -x "$out" ]; then
	echo "$out"
	exit 0
fi
start=$(date +%s)
work=$(mktemp -d "$cache/tmp-kubelet.XXXXXX")
trap 'rm -rf "$work"' EXIT
cd "$work"
export GOFLAGS=-mod=mod GOTOOLCHAIN=local CGO_ENABLED=0

log "kubelet $version (staging modules at $staging), module proxy: ${GOPROXY:-$(go env GOPROXY)}"
gomod=$(go mod download -json "k8s.io/kubernetes@$version" | sed -n 's/^\t"GoMod": "\(.*\)",$/\1/p')
[ -f "$gomod" ] || die "go mod download k8s.io/kubernetes@$version gave no go.mod"
gover=$(sed -n 's/^go \([0-9.]*\)$/\1/p' "$gomod")
{
	echo "module agentcg.local/kubeletbuild"
	echo
	echo "go ${gover:-1.26}"
	echo
	echo "require k8s.io/kubernetes $version"
	echo
	# Each `k8s.io/x => ./staging/src/k8s.io/x` becomes `k8s.io/x => k8s.io/x v0.N.P`.
	sed -n 's|^\t\(k8s.io/[a-z0-9-]*\) => ./staging/src/.*$|replace \1 => \1 '"$staging"'|p' "$gomod"
} >go.mod
grep -q '^replace k8s.io/api ' go.mod || die "no staging replace lines found in $gomod"
# The godebug defaults of the release (the main module's go.mod decides them).
sed -n 's/^godebug \(.*\)$/godebug \1/p' "$gomod" >>go.mod
printf 'package main\n\nimport _ "k8s.io/kubernetes/cmd/kubelet"\n' >tools.go

log "resolving modules"
nice -n 10 go mod tidy >"$work/tidy.out" 2>&1 || { tail -n 30 "$work/tidy.out" >&2; die "go mod tidy failed"; }
pkg=k8s.io/component-base/version
ldflags="-s -w -X $pkg.gitVersion=$version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean -X $pkg.buildDate=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
ldflags+=" -X k8s.io/client-go/pkg/version.gitVersion=$version"
log "go build (nice -n 10)"
nice -n 10 go build -trimpath -tags providerless -ldflags "$ldflags" -o "$work/kubelet" k8s.io/kubernetes/cmd/kubelet ||
	die "go build kubelet $version failed"
"$work/kubelet" --version >/dev/null || die "built kubelet does not run"
secs=$(($(date +%s) - start))
printf '%s\t%s s\t%s\tload %s\n' "$version" "$secs" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$(cut -d' ' -f1-3 /proc/loadavg)" >"$out.buildtime"
cp go.mod "$out.go.mod"
mv "$work/kubelet" "$out"
log "built $out in $secs s ($("$out" --version))"
echo "$out"
