#!/usr/bin/env bash
# selftest.sh: checks of series.py on synthetic thread mboxes (no network, no
# kernel tree; a few seconds). Run by hand: scripts/kernel/selftest.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
t=$(mktemp -d)
trap 'rm -rf "$t"' EXIT
fail=0
msg() { # VERSION K M [REPLY] -> one mboxrd message on stdout
	local v=$1 k=$2 m=$3 re=${4:-}
	printf 'From mboxrd@z Thu Jan  1 00:00:00 1970\n'
	printf 'From: A U Thor <a@example.org>\nSubject: %s[RFC PATCH bpf-next %s %02d/%02d] thing\n' "${re:+Re: }" "$v" "$k" "$m"
	printf ' number %s\nMessage-ID: <%s-%s%s@x>\n\n' "$k" "$v" "$k" "$re"
	printf 'body of %s %s\n>From quoted line\n\n' "$v" "$k"
}
check() { # NAME WANT_RC WANT_PATTERN
	local name=$1 want_rc=$2 pat=$3 rc=0 out
	out=$(python3 "$here/series.py" "$t/$name.mbox" "$t/$name.out" 2>&1) || rc=$?
	if [ "$rc" -ne "$want_rc" ] || ! grep -q -- "$pat" <<<"$out"; then
		echo "FAIL $name: rc=$rc (want $want_rc), output:"; echo "$out"; fail=1
	else
		echo "ok   $name"
	fi
}
{ msg v6 0 3; for k in 3 1 2; do msg v6 $k 3; done; msg v6 2 3 re; } >"$t/order.mbox"
check order 0 "0003.patch"
grep -q '^>From quoted line' "$t/order.out/0001.patch" || { echo "FAIL order: mboxrd quoting lost"; fail=1; }
grep -q 'number 1' "$t/order.out/0001.patch" || { echo "FAIL order: 0001 is not patch 1"; fail=1; }
{ for k in 1 2; do msg v5 $k 2; done; for k in 1 2 3; do msg v6 $k 3; done; } >"$t/newest.mbox"
check newest 0 "v6 03/03"
{ msg v6 1 3; msg v6 3 3; msg v6 2 3 re; } >"$t/missing.mbox"
check missing 1 "lacks patch(es) \[2\] of 3"
{ msg v6 1 2; msg v6 1 2; msg v6 2 2; } >"$t/dup.mbox"
check dup 1 "more than one message for patch(es) \[1\]"
{ msg v6 0 2; msg v6 1 2 re; } >"$t/none.mbox"
check none 1 "no '\[PATCH ... K/M\]' messages"
gzip -c "$t/order.mbox" >"$t/gz.mbox"
check gz 0 "0003.patch"
[ $fail -eq 0 ] && echo "selftest: all passed"
exit $fail
