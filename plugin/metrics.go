package plugin

import (
	"context"
	"time"

	"github.com/agentcg/agentcg/enroll"
	"github.com/agentcg/agentcg/policy"
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the plugin's Prometheus metrics, on their own registry.
type Metrics struct {
	Registry   *prometheus.Registry
	attaches   *prometheus.CounterVec
	detaches   prometheus.Counter
	rejections *prometheus.CounterVec
	latency    prometheus.Histogram
}

// NewMetrics registers the plugin's metrics and a collector that reads the
// policy's counters per priority at scrape time.
func NewMetrics(pol policy.Policy) *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		attaches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "agentcg_attaches_total", Help: "Containers whose cgroup got the policy.",
		}, []string{"priority", "mode"}),
		detaches: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "agentcg_detaches_total", Help: "Attachments removed at Stop/RemoveContainer or by reconcile.",
		}),
		rejections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "agentcg_rejections_total", Help: "Annotated containers left without the policy, by reason.",
		}, []string{"reason"}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "agentcg_attach_latency_seconds",
			Help:    "StartContainer received to policy attached (link pinned).",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14), // 0.5 ms .. 4 s
		}),
	}
	m.Registry.MustRegister(m.attaches, m.detaches, m.rejections, m.latency, policyCollector{pol})
	return m
}

// observe records one enrollment result.
func (m *Metrics) observe(res enroll.Result, took time.Duration) {
	switch res.Outcome {
	case enroll.Attached:
		m.attaches.WithLabelValues(string(res.Priority), string(res.Link.Mode)).Inc()
		m.latency.Observe(took.Seconds())
	case enroll.Rejected, enroll.Failed:
		m.rejections.WithLabelValues(string(res.Reason)).Inc()
	case enroll.Detached:
		m.detaches.Inc()
	}
}

// policyCollector sums the policy's per-cgroup counters by priority. The
// values are gauges: they cover the cgroups attached now, so they drop
// when a container goes away.
type policyCollector struct{ pol policy.Policy }

var (
	descLinks = prometheus.NewDesc("agentcg_policy_links", "Attachments the policy holds.", []string{"priority"}, nil)
	descDelay = prometheus.NewDesc("agentcg_policy_delay_calls", "get_high_delay_ms calls on attached cgroups.", []string{"priority", "result"}, nil)
	descMs    = prometheus.NewDesc("agentcg_policy_delay_ms", "Sum of delays returned on attached cgroups.", []string{"priority"}, nil)
	descLow   = prometheus.NewDesc("agentcg_policy_below_low_calls", "below_low calls on attached cgroups.", []string{"priority", "result"}, nil)
	descMin   = prometheus.NewDesc("agentcg_policy_below_min_true", "below_min true returns on attached cgroups.", []string{"priority"}, nil)
)

func (policyCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descLinks, descDelay, descMs, descLow, descMin} {
		ch <- d
	}
}

func (c policyCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	links, err := c.pol.List(ctx)
	if err != nil {
		return
	}
	stats, err := c.pol.Stats(ctx)
	if err != nil {
		stats = nil
	}
	n := map[policy.Priority]int{}
	sum := map[policy.Priority]policy.Counters{}
	for _, l := range links {
		n[l.Priority]++
		s := stats[l.CgroupID]
		t := sum[l.Priority]
		t.DelayCalls += s.DelayCalls
		t.DelayNonZero += s.DelayNonZero
		t.DelayTotalMs += s.DelayTotalMs
		t.BelowLowCalls += s.BelowLowCalls
		t.BelowLowTrue += s.BelowLowTrue
		t.BelowMinTrue += s.BelowMinTrue
		sum[l.Priority] = t
	}
	g := prometheus.GaugeValue
	for _, p := range policy.Priorities {
		s, ps := sum[p], string(p)
		ch <- prometheus.MustNewConstMetric(descLinks, g, float64(n[p]), ps)
		ch <- prometheus.MustNewConstMetric(descDelay, g, float64(s.DelayCalls), ps, "all")
		ch <- prometheus.MustNewConstMetric(descDelay, g, float64(s.DelayNonZero), ps, "nonzero")
		ch <- prometheus.MustNewConstMetric(descMs, g, float64(s.DelayTotalMs), ps)
		ch <- prometheus.MustNewConstMetric(descLow, g, float64(s.BelowLowCalls), ps, "all")
		ch <- prometheus.MustNewConstMetric(descLow, g, float64(s.BelowLowTrue), ps, "true")
		ch <- prometheus.MustNewConstMetric(descMin, g, float64(s.BelowMinTrue), ps)
	}
}
