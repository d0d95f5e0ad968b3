package plugin

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync/atomic"
	"time"

	"github.com/agentcg/agentcg/enroll"
	"github.com/containerd/nri/pkg/api"
	nrilog "github.com/containerd/nri/pkg/log"
	"github.com/containerd/nri/pkg/stub"
)

// RunOptions say how Run reaches the runtime.
type RunOptions struct {
	// Name and Idx identify an external plugin ("agentcg", "50"). A
	// pre-installed instance takes them from NRI_PLUGIN_NAME/IDX.
	Name, Idx string
	// Socket is the NRI socket ("" = api.DefaultSocketPath).
	Socket string
	// StubLogger receives the NRI stub's own log lines (nil: NRI's default).
	StubLogger nrilog.Logger
	// Dialer replaces the socket dialer (tests use it to cut the
	// connection the way a runtime restart does).
	Dialer func(string) (net.Conn, error)
	// MinBackoff and MaxBackoff bound the wait between reconnection
	// attempts (defaults 1 s and 30 s).
	MinBackoff, MaxBackoff time.Duration
	// ConfigureTimeout bounds the wait from an attempt's start to the
	// runtime's Configure (default 30 s; see runAttempt).
	ConfigureTimeout time.Duration
}

// DefaultConfigureTimeout is RunOptions.ConfigureTimeout's default: well
// past NRI's registration timeout (5 s), after which a runtime that is
// still there has either configured the plugin or dropped it.
const DefaultConfigureTimeout = 30 * time.Second

// errConfigureTimeout means an attempt was abandoned: registered, never
// configured.
var errConfigureTimeout = errors.New("the runtime never configured the plugin after its registration")

// Preinstalled reports whether the runtime started this process from its
// plugin folder and handed over a connected socket (and no stdout or
// stderr). It turns false once Run reconnects through the NRI socket.
func Preinstalled() bool { return os.Getenv(api.PluginSocketEnvVar) != "" }

// Run registers the plugin with the runtime and, whenever the connection
// is lost (the runtime dropped the plugin, or restarted), registers again
// with a capped backoff, until ctx ends. A pre-installed instance, whose
// inherited socket is dead once lost (containerd 2.1 starts pre-installed
// plugins only when it starts itself), comes back through the NRI socket
// as an external plugin.
func (p *Plugin) Run(ctx context.Context, o RunOptions) error {
	if o.MinBackoff <= 0 {
		o.MinBackoff = time.Second
	}
	if o.MaxBackoff < o.MinBackoff {
		o.MaxBackoff = max(30*time.Second, o.MinBackoff)
	}
	socket := o.Socket
	if socket == "" {
		socket = api.DefaultSocketPath
	}
	if o.ConfigureTimeout <= 0 {
		o.ConfigureTimeout = DefaultConfigureTimeout
	}
	closed := p.e.Config().FailMode == enroll.FailClosed
	backoff := o.MinBackoff
	for attempt := 1; ; attempt++ {
		var opts []stub.Option
		if !Preinstalled() {
			name, idx := o.Name, o.Idx
			if n := os.Getenv(api.PluginNameEnvVar); n != "" {
				name = n // a pre-installed instance reconnecting externally
			}
			if i := os.Getenv(api.PluginIdxEnvVar); i != "" {
				idx = i
			}
			opts = append(opts, stub.WithPluginName(name), stub.WithPluginIdx(idx), stub.WithSocketPath(socket))
		}
		dial := o.Dialer
		if dial == nil {
			dial = func(path string) (net.Conn, error) { return net.Dial("unix", path) }
		}
		var conn atomic.Pointer[net.Conn] // this attempt's, to hang up on abandon
		opts = append(opts, stub.WithDialer(func(path string) (net.Conn, error) {
			c, err := dial(path)
			if err == nil {
				conn.Store(&c)
			}
			return c, err
		}))
		if o.StubLogger != nil {
			opts = append(opts, stub.WithLogger(o.StubLogger))
		}
		gen := p.attempts.Add(1)
		opts = append(opts,
			// Only this attempt's end counts: an abandoned attempt's late
			// close must not mark a newer connection as lost.
			stub.WithOnClose(func() {
				if p.attempts.Load() == gen {
					p.Disconnected()
				}
			}),
			// Runtimes with failure-policy support (NRI >= 0.12.5) keep us
			// registered after a slow request and, under fail_mode closed,
			// fail the request rather than proceed without us. Older
			// runtimes (containerd 2.1: NRI 0.8) ignore this.
			stub.WithFailurePolicy(&api.FailurePolicy{FailRequest: closed, KeepConnected: true}),
		)
		s, err := stub.New(p, opts...)
		if err != nil {
			return fmt.Errorf("nri stub: %w", err)
		}
		began := time.Now()
		watchdog := time.NewTimer(o.ConfigureTimeout)
		err = p.runAttempt(ctx, s.Run, watchdog.C, func() {
			if c := conn.Load(); c != nil {
				(*c).Close()
			}
		})
		watchdog.Stop()
		p.Disconnected()
		if ctx.Err() != nil {
			return nil
		}
		if Preinstalled() {
			os.Unsetenv(api.PluginSocketEnvVar)
			p.log.Warn("pre-installed connection lost; reconnecting through the NRI socket as an external plugin", "socket", socket)
		}
		if time.Since(began) > time.Minute {
			backoff = o.MinBackoff
		}
		p.log.Warn("NRI connection lost or refused; reconnecting", "in", backoff.String(), "attempt", attempt, "err", err)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		backoff = min(2*backoff, o.MaxBackoff)
	}
}

// runAttempt runs one connection (run is the stub's Run) until it ends.
// The NRI stub waits without a bound for the runtime's Configure once it
// has registered, and deadlocks if the connection drops in between (a
// runtime that dies or restarts right then; containerd/nri#298): nothing
// would ever reconnect, and SIGTERM would not stop the process. So an
// attempt not configured when expired fires, or when ctx ends, is
// abandoned: hangUp closes its connection, and its goroutine, stuck in the
// stub, is left behind (one per such event).
func (p *Plugin) runAttempt(ctx context.Context, run func(context.Context) error, expired <-chan time.Time, hangUp func()) error {
	before := p.configures.Load()
	configured := func() bool { return p.configures.Load() != before }
	done := make(chan error, 1)
	go func() { done <- run(ctx) }()
	for {
		select {
		case err := <-done:
			return err
		case <-expired:
			if configured() {
				expired = nil // registered: wait for the connection's end
				continue
			}
		case <-ctx.Done():
			if configured() {
				return <-done // the stub stops on ctx
			}
		}
		hangUp()
		p.log.Error("abandoning an NRI connection that was not configured after registering")
		return errConfigureTimeout
	}
}
