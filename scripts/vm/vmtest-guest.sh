#!/bin/bash
# vmtest-guest.sh OUT [RUN_REGEX]: runs inside the guest (via vmtest.sh).
# OUT (relative to the checkout) holds the test binaries and a list of
# "pkgdir binary" lines; each binary runs from its package folder so testdata
# paths resolve as under go test. AGENTCG_TEST_TIMEOUT (default 20m) bounds
# each package (make soak raises it).
out=$1 run=$2
src=${AGENTCG_SRC:-/agentcg}
fail=0
summary=()
while read -r dir bin; do
	start=$(date +%s)
	args=(-test.v "-test.timeout=${AGENTCG_TEST_TIMEOUT:-20m}")
	[ -n "$run" ] && args+=(-test.run "$run")
	echo "=== vmtest $dir"
	if (cd "$src/$dir" && "$src/$out/$bin" "${args[@]}"); then
		res=PASS
	else
		res=FAIL fail=1
	fi
	summary+=("--- vmtest $dir: $res ($(($(date +%s) - start)) s)")
done <"$src/$out/list"
printf '%s\n' "${summary[@]}"
exit $fail
