//go:build ignore

// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* HIGH ops: protect a HIGH cgroup from reclaim driven by an ancestor's limit
 * (below_low). Nothing here runs on HIGH's page faults or charges: HIGH's
 * activity is sampled by LOW's get_high_delay_ms (low.bpf.c). This object
 * holds exactly one struct_ops map (cilium/ebpf v0.22.0 mis-fills several
 * maps of one ops type in one object). */
#include "common.bpf.h"

SEC("struct_ops/below_low")
bool BPF_PROG(high_below_low, struct mem_cgroup *memcg)
{
	struct agentcg_counters *c = counters_of(memcg_cgroup_id(memcg));
	struct agentcg_counters *t = totals_of(AGENTCG_PRIO_HIGH);

	if (c) {
		__sync_fetch_and_add(&c->below_low_calls, 1);
		__sync_fetch_and_add(&c->below_low_true, 1);
	}
	if (t) {
		__sync_fetch_and_add(&t->below_low_calls, 1);
		__sync_fetch_and_add(&t->below_low_true, 1);
	}
	/* The kernel still reclaims a "protected" cgroup in its second pass
	 * when nothing else is reclaimable, so this cannot cause an OOM that
	 * memory.low would have avoided. */
	return true;
}

SEC("struct_ops/below_min")
bool BPF_PROG(high_below_min, struct mem_cgroup *memcg)
{
	/* Never hard-protect: with swap off that would turn the parent's
	 * pressure into OOM kills of LOW instead of slowing it. Counted in
	 * below_min_true only if this ever changes. */
	return false;
}

SEC(".struct_ops.link")
struct memcg_bpf_ops high_ops = {
	.below_low = (void *)high_below_low,
	.below_min = (void *)high_below_min,
};

char LICENSE[] SEC("license") = "Dual BSD/GPL";
