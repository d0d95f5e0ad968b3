//go:build ignore

// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* LOW ops: get_high_delay_ms returns a delay that is zero unless a HIGH
 * cgroup grew recently (policy.GrowthSignal, sampled here, on LOW's
 * slow-path charges) and the nearest limited ancestor is under pressure; see
 * README.md for the formula. One struct_ops map per object. */
#include "common.bpf.h"

/* Set by the loader through CollectionSpec.Variables before load. */
const volatile __u32 gate_pct = 80;
const volatile __u32 delay_base_ms = 10;
const volatile __u32 delay_max_ms = 200;
const volatile __u64 high_window_ns = 2000000000ULL; /* 0: always active */
const volatile __u64 high_growth_bytes = 8ULL << 20;

/* page_counter.max of an unlimited counter: LONG_MAX / PAGE_SIZE. */
#define PAGE_COUNTER_MAX (0x7fffffffffffffffUL / 4096)
/* How far up the hierarchy the gate looks for a limited ancestor. */
#define MAX_DEPTH 16

struct high_sample {
	__u64 now;
	bool active;
};

/* bpf_for_each_map_elem callback over agentcg_high: one GrowthSignal sample
 * of one HIGH cgroup. Every HIGH is sampled (no early stop) so that each
 * one's window sees every LOW charge. */
static long sample_high(struct bpf_map *map, __u64 *id, struct agentcg_high *h, struct high_sample *s)
{
	struct mem_cgroup *memcg;
	struct cgroup *cg;
	__u64 usage;
	bool active;

	cg = bpf_cgroup_from_id(*id);
	if (!cg) /* removed; the loader's reconcile drops the entry */
		return 0;
	memcg = bpf_get_mem_cgroup(&cg->self);
	bpf_cgroup_release(cg);
	if (!memcg)
		return 0;
	usage = bpf_mem_cgroup_usage(memcg);
	bpf_put_mem_cgroup(memcg);

	bpf_spin_lock(&h->lock);
	active = growth_observe(&h->g, s->now, usage, high_window_ns, high_growth_bytes);
	bpf_spin_unlock(&h->lock);
	if (active)
		s->active = true;
	return 0;
}

/* Whether any HIGH cgroup grew by high_growth_bytes within high_window_ns. */
static __always_inline bool high_active(void)
{
	struct high_sample s = {};

	if (!high_window_ns)
		return true;
	s.now = bpf_ktime_get_ns();
	bpf_for_each_map_elem(&agentcg_high, sample_high, &s, 0);
	return s.active;
}

/* Usage of the nearest ancestor with a finite memory.max, in per mille of
 * that limit (capped at 1000); 0 when no ancestor is limited. */
static __always_inline __u64 parent_pressure_pm(struct mem_cgroup *memcg)
{
	struct page_counter *pc = memcg->memory.parent;

	for (int i = 0; i < MAX_DEPTH; i++) {
		unsigned long max;
		long usage;

		if (!pc)
			return 0;
		max = pc->max;
		if (max && max < PAGE_COUNTER_MAX) {
			usage = pc->usage.counter;
			if (usage <= 0)
				return 0;
			if ((unsigned long)usage >= max)
				return 1000;
			return (unsigned long)usage * 1000 / max;
		}
		pc = pc->parent;
	}
	return 0;
}

static __always_inline __u32 delay_for(__u64 pm)
{
	__u64 gate = (__u64)gate_pct * 10;

	if (pm < gate)
		return 0;
	if (gate >= 1000)
		return delay_max_ms;
	return delay_base_ms +
	       (__u32)(((__u64)(delay_max_ms - delay_base_ms) * (pm - gate)) / (1000 - gate));
}

SEC("struct_ops/get_high_delay_ms")
unsigned int BPF_PROG(low_delay, struct mem_cgroup *memcg)
{
	struct agentcg_counters *c = counters_of(memcg_cgroup_id(memcg));
	struct agentcg_counters *t = totals_of(AGENTCG_PRIO_LOW);
	__u32 d = 0;

	if (c)
		__sync_fetch_and_add(&c->delay_calls, 1);
	if (t)
		__sync_fetch_and_add(&t->delay_calls, 1);
	if (high_active())
		d = delay_for(parent_pressure_pm(memcg));
	if (d && c) {
		__sync_fetch_and_add(&c->delay_nonzero, 1);
		__sync_fetch_and_add(&c->delay_total_ms, d);
	}
	if (d && t) {
		__sync_fetch_and_add(&t->delay_nonzero, 1);
		__sync_fetch_and_add(&t->delay_total_ms, d);
	}
	return d;
}

SEC(".struct_ops.link")
struct memcg_bpf_ops low_ops = {
	.get_high_delay_ms = (void *)low_delay,
};

char LICENSE[] SEC("license") = "Dual BSD/GPL";
