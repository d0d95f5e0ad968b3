package plugin

import (
	"context"
	"net/http"
	"runtime"
	"time"

	"github.com/agentcg/agentcg/enroll"
	"github.com/agentcg/agentcg/policy"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// BuildInfo labels agentcg_build_info.
type BuildInfo struct {
	Version string
}

// Metrics are the plugin's Prometheus metrics, on their own registry.
type Metrics struct {
	Registry     *prometheus.Registry
	attaches     *prometheus.CounterVec
	detaches     prometheus.Counter
	rejections   *prometheus.CounterVec
	latency      prometheus.Histogram
	recordErrors prometheus.Counter
	connected    prometheus.Gauge
	queue        func() int
}

// NewMetrics registers the plugin's metrics, the process and Go
// collectors, and a collector that reads the policy at scrape time.
func NewMetrics(pol policy.Policy, info BuildInfo) *Metrics {
	if info.Version == "" {
		info.Version = "dev"
	}
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		attaches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "agentcg_attaches_total", Help: "Containers whose cgroup got the policy.",
		}, []string{"priority", "mode"}),
		detaches: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "agentcg_detaches_total", Help: "Attachments removed at Stop/RemoveContainer or by reconcile.",
		}),
		rejections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "agentcg_rejections_total", Help: "Annotated containers left without the policy (or detaches that failed), by reason.",
		}, []string{"reason"}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "agentcg_attach_latency_seconds",
			Help:    "StartContainer received to policy attached (link pinned).",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14), // 0.5 ms .. 4 s
		}),
		recordErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "agentcg_record_errors_total", Help: "Unreadable container records skipped (each listing that skips one counts).",
		}),
		connected: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "agentcg_nri_connected", Help: "1 while the plugin is registered and synchronized with the runtime.",
		}),
	}
	build := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "agentcg_build_info", Help: "Build of agentcg-nri; the value is 1.",
		ConstLabels: prometheus.Labels{"version": info.Version, "goversion": runtime.Version()},
	})
	build.Set(1)
	queue := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "agentcg_pending_operations", Help: "Enrolls and detaches queued or running.",
	}, func() float64 {
		if m.queue == nil {
			return 0
		}
		return float64(m.queue())
	})
	m.Registry.MustRegister(m.attaches, m.detaches, m.rejections, m.latency, m.recordErrors, m.connected, build, queue,
		policyCollector{pol},
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		collectors.NewGoCollector())
	return m
}

func (m *Metrics) setQueue(f func() int) { m.queue = f }

func (m *Metrics) setConnected(c bool) {
	if c {
		m.connected.Set(1)
	} else {
		m.connected.Set(0)
	}
}

// observe records one enrollment result.
func (m *Metrics) observe(res enroll.Result, took time.Duration) {
	switch res.Outcome {
	case enroll.Attached:
		m.attaches.WithLabelValues(string(res.Priority), string(res.Link.Mode)).Inc()
		m.latency.Observe(took.Seconds())
	case enroll.Rejected, enroll.Failed:
		m.rejections.WithLabelValues(string(res.Reason)).Inc()
		if res.Reason == enroll.ReasonRecordUnreadable {
			m.recordErrors.Inc()
		}
	case enroll.Detached:
		m.detaches.Inc()
	}
}

// Handler serves /metrics, /healthz (the process answers) and /readyz
// (ready() is true: the plugin is connected to the runtime).
func (m *Metrics) Handler(ready func() bool) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{Timeout: 5 * time.Second}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !ready() {
			http.Error(w, "not connected to the runtime's NRI socket", http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ok\n"))
	})
	return mux
}

// NewServer returns the metrics server for addr with timeouts, so that a
// client that trickles its headers cannot hold connections open.
func NewServer(addr string, h http.Handler) *http.Server {
	return &http.Server{
		Addr:              addr,
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       60 * time.Second,
	}
}

// policyCollector reads the policy at scrape time: the links it holds now
// (a gauge), and, from a policy.TotalsReader, the node-wide kernel counters
// per priority, which never decrease while the policy's state lives (a
// container's exit does not take its counts away), so they are counters.
type policyCollector struct{ pol policy.Policy }

var (
	descLinks = prometheus.NewDesc("agentcg_policy_links", "Attachments the policy holds now.", []string{"priority"}, nil)
	descDelay = prometheus.NewDesc("agentcg_policy_delay_calls_total", "get_high_delay_ms calls, by the priority of the cgroup.", []string{"priority", "result"}, nil)
	descMs    = prometheus.NewDesc("agentcg_policy_delay_ms_total", "Sum of the delays returned, in ms.", []string{"priority"}, nil)
	descLow   = prometheus.NewDesc("agentcg_policy_below_low_calls_total", "below_low calls.", []string{"priority", "result"}, nil)
	descMin   = prometheus.NewDesc("agentcg_policy_below_min_true_total", "below_min returns of true.", []string{"priority"}, nil)
	descUp    = prometheus.NewDesc("agentcg_policy_scrape_ok", "1 if the policy answered the last scrape.", nil, nil)
)

func (policyCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descLinks, descDelay, descMs, descLow, descMin, descUp} {
		ch <- d
	}
}

func (c policyCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	ok := 1.0
	links, err := c.pol.List(ctx)
	if err != nil {
		ok = 0
	} else {
		n := map[policy.Priority]int{}
		for _, l := range links {
			n[l.Priority]++ // orphans too: they hold a link until the sweep
		}
		for _, p := range policy.Priorities {
			ch <- prometheus.MustNewConstMetric(descLinks, prometheus.GaugeValue, float64(n[p]), string(p))
		}
	}
	if tr, isTR := c.pol.(policy.TotalsReader); isTR {
		totals, err := tr.Totals(ctx)
		if err != nil {
			ok = 0
		} else {
			cv := prometheus.CounterValue
			for _, p := range policy.Priorities {
				s, ps := totals[p], string(p)
				ch <- prometheus.MustNewConstMetric(descDelay, cv, float64(s.DelayCalls), ps, "all")
				ch <- prometheus.MustNewConstMetric(descDelay, cv, float64(s.DelayNonZero), ps, "nonzero")
				ch <- prometheus.MustNewConstMetric(descMs, cv, float64(s.DelayTotalMs), ps)
				ch <- prometheus.MustNewConstMetric(descLow, cv, float64(s.BelowLowCalls), ps, "all")
				ch <- prometheus.MustNewConstMetric(descLow, cv, float64(s.BelowLowTrue), ps, "true")
				ch <- prometheus.MustNewConstMetric(descMin, cv, float64(s.BelowMinTrue), ps)
			}
		}
	}
	ch <- prometheus.MustNewConstMetric(descUp, prometheus.GaugeValue, ok)
}
