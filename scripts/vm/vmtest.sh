#!/usr/bin/env bash
# vmtest.sh: the VM test tier. Compiles every package that has vmtest-tagged
# tests (CGO_ENABLED=0 go test -c -tags vmtest) into build/vmtest/, runs them
# all in one guest boot, each from its package directory under /agentcg, prints
# each result, then runs the harness's host-side self-test (selftest.sh).
# Exits non-zero if anything fails.
#
#   scripts/vm/vmtest.sh [--profile default|systemd] [--run REGEX] [--mem MB]
#                        [--cpus N] [--timeout S] [--no-selftest] [PKG_DIR...]
#
# --profile systemd boots run.sh's systemd profile (kubelet, systemd cgroup
# driver) and runs the tests tagged vmtest_systemd instead (`make vmtest-kube`).
#
# Test output (-test.v) streams to the console. Each invocation works in its
# own build/vmtest/<time>-<pid>/ (engineers share one work tree), linked from
# build/vmtest/latest; AGENTCG_RESULTS is its results/ folder on the host.
# The test binaries are deleted at the end; list and results stay.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/../.." && pwd)
cd "$src"
export PATH=/usr/local/go/bin:$PATH

run= selftest=1 vmflags=(--mem 2048 --cpus 2 --timeout 2400) profile=default
while [ $# -gt 0 ]; do
	case $1 in
	--profile) profile=$2; shift 2 ;;
	--run) run=$2; shift 2 ;;
	--mem | --cpus | --timeout) vmflags+=("$1" "$2"); shift 2 ;;
	--no-selftest) selftest=0; shift ;;
	-*) echo "vmtest.sh: unknown flag $1" >&2; exit 2 ;;
	*) break ;;
	esac
done

case $profile in
default) tag=vmtest ;;
systemd) tag=vmtest_systemd ;;
*) echo "vmtest.sh: unknown profile $profile (default, systemd)" >&2; exit 2 ;;
esac
vmflags+=(--profile "$profile")
if [ $# -gt 0 ]; then
	dirs=("$@")
else
	# \b: the tag vmtest does not match vmtest_systemd ("_" is a word character).
	mapfile -t dirs < <(grep -rlE --include='*_vm_test.go' "^//go:build .*\\b$tag\\b" . |
		grep -v '^./build/' | xargs -r -n1 dirname | sed 's|^\./||' | sort -u)
fi
out=build/vmtest/$(date -u +%Y%m%dT%H%M%SZ)-$$
mkdir -p "$out/results"
ln -sfn "$(basename "$out")" build/vmtest/latest
trap 'rm -f "$out"/*.test' EXIT
failed=0
: >"$out/list"
for d in "${dirs[@]}"; do
	d=${d#./}
	bin=$(echo "$d" | tr / _).test
	if CGO_ENABLED=0 go test -c -tags "$tag" -o "$out/$bin" "./$d"; then
		# go test -c writes nothing for a package without tests.
		[ -f "$out/$bin" ] && printf '%s %s\n' "$d" "$bin" >>"$out/list"
	else
		echo "--- vmtest $d: FAIL (does not compile)"
		failed=1
	fi
done
if [ ! -s "$out/list" ]; then
	echo "vmtest.sh: no packages with $tag tests found" >&2
	exit 1
fi
echo "vmtest.sh: profile $profile, $(wc -l <"$out/list") package(s): $(cut -d' ' -f1 "$out/list" | paste -sd' ' -)"

start=$(date +%s)
rc=0
"$here/run.sh" "${vmflags[@]}" --results "$out/results" -- \
	bash scripts/vm/vmtest-guest.sh "$out" "$run" || rc=$?
echo "vmtest.sh: guest tier exit $rc in $(($(date +%s) - start)) s"
[ "$rc" = 0 ] || failed=1

if [ "$selftest" = 1 ]; then
	"$here/selftest.sh" --profile "$profile" || failed=1
fi
exit "$failed"
