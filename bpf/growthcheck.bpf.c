//go:build ignore

// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* A test-only syscall program that runs growth_observe (the code
 * get_high_delay_ms uses) on one sample passed in through BPF_PROG_RUN's
 * context, so that a Go test can feed the same samples to
 * policy.GrowthSignal and compare every step. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include "growth.bpf.h"

struct growth_check {
	struct agentcg_growth g; /* in and out */
	__u64 now;
	__u64 usage;
	__u64 window;
	__u64 min_growth;
	__u64 active; /* out: 0 or 1 */
};

SEC("syscall")
int run_growth_check(struct growth_check *c)
{
	struct agentcg_growth g = c->g;

	c->active = growth_observe(&g, c->now, c->usage, c->window, c->min_growth);
	c->g = g;
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
