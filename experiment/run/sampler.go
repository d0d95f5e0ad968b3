package run

import (
	"context"
	"maps"
	"sync"
	"time"

	"github.com/agentcg/agentcg/cgroup"
	"github.com/agentcg/agentcg/experiment/results"
	"github.com/agentcg/agentcg/experiment/stats"
	"github.com/agentcg/agentcg/policy"
)

// Named is a cgroup with the name the time series gives it.
type Named struct{ Name, Dir string }

// StatsFunc reads the policy counters per cgroup id.
type StatsFunc func(ctx context.Context) (map[uint64]policy.Counters, error)

// Sampler records memory.current and memory.pressure of every cgroup each
// Period, and the policy counters every StatsEvery samples: they are read
// while the containers live because their cgroups (and counters) go with them.
type Sampler struct {
	RunID      string
	Zero       time.Time // t=0 of the series: the barrier
	Period     time.Duration
	Cgroups    []Named
	Stats      StatsFunc
	StatsEvery int

	mu       sync.Mutex
	samples  []results.Sample
	counters map[uint64]policy.Counters
}

// Run samples until ctx ends, then takes one last sample.
func (s *Sampler) Run(ctx context.Context) {
	t := time.NewTicker(s.Period)
	defer t.Stop()
	for i := 0; ; i++ {
		s.sample(ctx, i)
		select {
		case <-ctx.Done():
			s.sample(context.WithoutCancel(ctx), 0)
			return
		case <-t.C:
		}
	}
}

func (s *Sampler) sample(ctx context.Context, i int) {
	now := time.Now()
	var batch []results.Sample
	for _, c := range s.Cgroups {
		cur, err := cgroup.ReadBytes(c.Dir, "memory.current")
		if err != nil {
			continue // not there (yet or any more)
		}
		p, _ := ReadPressure(c.Dir)
		sw, err := cgroup.ReadBytes(c.Dir, "memory.swap.current")
		if err != nil {
			sw = 0
		}
		batch = append(batch, results.Sample{Run: s.RunID, Cgroup: c.Name, T: now.Sub(s.Zero).Seconds(), Current: cur, Swap: sw,
			SomeAvg10: p.SomeAvg10, FullAvg10: p.FullAvg10, SomeTotal: p.SomeTotal, FullTotal: p.FullTotal})
	}
	var ctrs map[uint64]policy.Counters
	if s.Stats != nil && (s.StatsEvery <= 1 || i%s.StatsEvery == 0) {
		ctrs, _ = s.Stats(ctx)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.samples = append(s.samples, batch...)
	if s.counters == nil {
		s.counters = map[uint64]policy.Counters{}
	}
	maps.Copy(s.counters, ctrs)
}

// Samples returns what was recorded.
func (s *Sampler) Samples() []results.Sample {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]results.Sample(nil), s.samples...)
}

// Counters returns the last counters seen per cgroup id.
func (s *Sampler) Counters() map[uint64]policy.Counters {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.counters)
}

// Utilisation is the time-weighted mean (stats.TimeWeightedMean,
// trapezoids between samples) of the named cgroup's usage over limit on
// [from, to]: samples are not equally spaced when the machine is busy.
func Utilisation(samples []results.Sample, name string, limit int64, from, to float64) float64 {
	if limit <= 0 {
		return 0
	}
	var t, v []float64
	for _, s := range samples {
		if s.Cgroup == name && s.T >= from && s.T <= to && (len(t) == 0 || s.T > t[len(t)-1]) {
			t = append(t, s.T)
			v = append(v, float64(s.Current)/float64(limit))
		}
	}
	u, err := stats.TimeWeightedMean(t, v)
	if err != nil {
		return 0
	}
	return u
}
