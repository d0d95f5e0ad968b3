#!/usr/bin/env bash
# make bench: the unpaced replay's page-touch throughput next to a raw
# mmap-and-touch loop measured in the same run (and their ratio), then the
# trace parser's Go benchmark.
#   BENCH_TRACE      trace folder (default: Medical_Bio_Hard)
#   BENCH_MEM_SCALE  memory scale; 0.25 keeps the 4.06 GB spike at ~1 GB
#   BENCH_ROUNDS     interleaved replay/raw pairs; medians are reported
#   BENCH_MIN_RATIO  fail when replay/raw is below this (default 0.8)
#   BENCH_VM         1 (default): also run the BPF benches in the VM (bpf/*_vm_test.go,
#                    TestBench*: page-fault overhead of the ops, LOW's throttling)
#                    and the OCI hook under BENCH_HOOK_N (20) concurrent annotated docker runs
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${BIN:-bin/agentcg-replay}
"$bin" bench "${BENCH_TRACE:-replayimage/traces/Medical_Bio_Hard}" \
	--mem-scale "${BENCH_MEM_SCALE:-0.25}" \
	--rounds "${BENCH_ROUNDS:-5}" \
	--min-ratio "${BENCH_MIN_RATIO:-0.8}"
echo "== parser"
"${GO:-go}" test -run '^$' -bench . -benchmem ./replayimage/trace/
# The policy's costs need the patched kernel: set BENCH_VM=0 to skip. The
# TestBench* functions print ratios measured within one guest run and assert
# none of them (make check skips them). TCG shares the host's cores: the
# host load average is printed before and after, the guest's with each ratio.
if [ "${BENCH_VM:-1}" = 1 ]; then
	echo "== memcg ops: page-fault overhead and LOW throttling (VM, TCG); host: $(uptime)"
	AGENTCG_BENCH=1 scripts/vm/vmtest.sh --no-selftest --mem 1024 --run '^TestBench' bpf |
		grep -E 'BENCH|^(---|===|ok|FAIL|PASS)|vmtest'
	echo "== host after the VM benches: $(uptime)"
	echo "== OCI hook attach under ${BENCH_HOOK_N:-20} concurrent annotated docker runs (VM, TCG); host: $(uptime)"
	AGENTCG_BENCH=1 AGENTCG_BENCH_N="${BENCH_HOOK_N:-20}" scripts/vm/vmtest.sh --no-selftest --run '^TestBenchHookConcurrency$' hook |
		grep -E 'BENCH|^(---|===|ok|FAIL|PASS)|vmtest'
	echo "== host after the hook bench: $(uptime)"
fi
