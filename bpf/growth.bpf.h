/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* growth_observe is policy.GrowthSignal.Observe (policy/activity.go) step for
 * step; TestGrowthSignalMatchesGo runs both on the same samples. Durations
 * are compared as signed 64-bit nanoseconds like Go's time.Duration, so the
 * two agree even on out-of-order samples (two CPUs reading the clock, then
 * taking the lock in the other order). A time of 0 means unset: the kernel's
 * monotonic clock is never 0 once BPF runs. */
#ifndef AGENTCG_GROWTH_BPF_H
#define AGENTCG_GROWTH_BPF_H

/* GrowthSignal state of one HIGH cgroup. Times are bpf_ktime_get_ns(). */
struct agentcg_growth {
	__u64 base;      /* lowest usage since base_at, bytes */
	__u64 base_at;   /* start of the current window */
	__u64 last_grow; /* when growth was last seen */
};

static __always_inline bool growth_active(const struct agentcg_growth *g, __u64 now, __u64 window)
{
	if (!window)
		return true;
	return g->last_grow && (__s64)(now - g->last_grow) <= (__s64)window;
}

static __always_inline bool growth_observe(struct agentcg_growth *g, __u64 now, __u64 usage,
					   __u64 window, __u64 min_growth)
{
	if (!window)
		return true;
	if (!g->base_at || (__s64)(now - g->base_at) > (__s64)window) {
		/* First sample, or the window ran out without growth: start anew. */
		g->base = usage;
		g->base_at = now;
	} else if (usage < g->base) {
		g->base = usage;
	} else if (usage - g->base >= (min_growth ? min_growth : 1)) {
		g->last_grow = now;
		g->base = usage;
		g->base_at = now;
	}
	return growth_active(g, now, window);
}

#endif
