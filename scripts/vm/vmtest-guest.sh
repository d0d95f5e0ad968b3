#!/bin/bash
# vmtest-guest.sh LIST [RUN_REGEX]: runs inside the guest (via vmtest.sh).
# LIST holds "pkgdir binary" lines; each binary runs from its package folder
# so testdata paths resolve as under go test.
list=$1 run=$2
src=${AGENTCG_SRC:-/agentcg}
fail=0
summary=()
while read -r dir bin; do
	start=$(date +%s)
	args=(-test.v -test.timeout=20m)
	[ -n "$run" ] && args+=(-test.run "$run")
	echo "=== vmtest $dir"
	if (cd "$src/$dir" && "$src/build/vmtest/$bin" "${args[@]}"); then
		res=PASS
	else
		res=FAIL fail=1
	fi
	summary+=("--- vmtest $dir: $res ($(($(date +%s) - start)) s)")
done <"$src/$list"
printf '%s\n' "${summary[@]}"
exit $fail
