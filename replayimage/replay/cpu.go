package replay

import (
	"context"
	"math"
	"sync"
	"sync/atomic"
	"time"
)

// dutyPeriod is the CPU replay's duty cycle: each worker spins for its share
// of the period and sleeps the rest.
const dutyPeriod = 10 * time.Millisecond

// burner replays a CPU percentage (which may exceed 100 on several cores)
// with one spinning worker per 100%.
type burner struct {
	percent atomic.Uint64 // float64 bits
	max     float64
	cancel  context.CancelFunc
	wg      sync.WaitGroup
}

func startBurner(ctx context.Context, maxPercent float64) *burner {
	ctx, cancel := context.WithCancel(ctx)
	b := &burner{max: maxPercent, cancel: cancel}
	for w := range int(math.Ceil(maxPercent / 100)) {
		b.wg.Add(1)
		go b.work(ctx, w)
	}
	return b
}

// set changes the target; it is clamped to [0, max].
func (b *burner) set(percent float64) {
	b.percent.Store(math.Float64bits(min(max(percent, 0), b.max)))
}

func (b *burner) work(ctx context.Context, w int) {
	defer b.wg.Done()
	for ctx.Err() == nil {
		share := min(max(math.Float64frombits(b.percent.Load())/100-float64(w), 0), 1)
		busy := time.Duration(share * float64(dutyPeriod))
		for end := time.Now().Add(busy); time.Now().Before(end); {
		}
		if rest := dutyPeriod - busy; rest > 0 {
			time.Sleep(rest)
		}
	}
}

func (b *burner) stop() {
	b.cancel()
	b.wg.Wait()
}
