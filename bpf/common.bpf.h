/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Shared by high.bpf.c and low.bpf.c. Each object gets its own copy of these
 * definitions; the loader makes both objects use the same kernel maps (pinned
 * by name under <PinDir>/maps, so every process shares them too). */
#ifndef AGENTCG_COMMON_BPF_H
#define AGENTCG_COMMON_BPF_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "growth.bpf.h"

/* Values of agentcg_prio; mirrored in Go (prioHigh, prioLow). */
#define AGENTCG_PRIO_HIGH 1
#define AGENTCG_PRIO_LOW 2

/* Per-cgroup counters; mirrored by policy.Counters. */
struct agentcg_counters {
	__u64 delay_calls;
	__u64 delay_nonzero;
	__u64 delay_total_ms;
	__u64 below_low_calls;
	__u64 below_low_true;
	__u64 below_min_true;
};

struct agentcg_high {
	struct bpf_spin_lock lock; /* LOW charges on several CPUs sample at once */
	struct agentcg_growth g;
};

/* HIGH cgroup id -> its growth state. The loader adds a zeroed entry when it
 * attaches high ops and deletes it on detach; LOW's get_high_delay_ms walks
 * the map and samples each HIGH cgroup's usage. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64);
	__type(value, struct agentcg_high);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} agentcg_high SEC(".maps");

/* cgroup id -> counters. LRU so that counters of removed cgroups stay
 * readable after detach without growing without bound. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64);
	__type(value, struct agentcg_counters);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} agentcg_ctrs SEC(".maps");

/* AGENTCG_PRIO_* -> the counters of every cgroup of that priority, summed
 * per CPU. Never reduced by Detach or LRU eviction: node-wide totals that
 * only grow while the pinned maps live (policy.TotalsReader). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 3);
	__type(key, __u32);
	__type(value, struct agentcg_counters);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} agentcg_totals SEC(".maps");

/* The cgroup id (cgroup directory inode) of a memcg. */
static __always_inline __u64 memcg_cgroup_id(struct mem_cgroup *memcg)
{
	return memcg->css.cgroup->kn->id;
}

/* The counters of cgroup id, created on first use; NULL if the map is full
 * of entries that could not be evicted. */
static __always_inline struct agentcg_counters *counters_of(__u64 id)
{
	struct agentcg_counters *c, zero = {};

	c = bpf_map_lookup_elem(&agentcg_ctrs, &id);
	if (c)
		return c;
	bpf_map_update_elem(&agentcg_ctrs, &id, &zero, BPF_NOEXIST);
	return bpf_map_lookup_elem(&agentcg_ctrs, &id);
}

/* This CPU's totals of priority prio (AGENTCG_PRIO_*). */
static __always_inline struct agentcg_counters *totals_of(__u32 prio)
{
	return bpf_map_lookup_elem(&agentcg_totals, &prio);
}

#endif
