package plugin

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/agentcg/agentcg/internal/jsonfile"
)

// StatusName is the status file's name in the state dir. It has no .json
// suffix so that the record listing never mistakes it for a record.
const StatusName = "agentcg-nri.status"

// Status is the content of the status file that agentcg-nri keeps in its
// state dir, for `agentcg doctor` and operators: whether the plugin runs and
// is connected to the runtime's NRI socket. A killed plugin cannot clear
// Connected, so a reader tests the instance lock (LockPath) for liveness.
// Pid is the plugin's pid in its own pid namespace: in a pod without
// hostPID it names nothing on the host, so it is for display only.
type Status struct {
	Pid     int    `json:"pid"`
	Version string `json:"version"`
	Mode    string `json:"mode"` // policy mode in use: bpf or native
	// Connected is true between Synchronize and the loss of the connection.
	Connected bool `json:"connected"`
	// Since is when Connected last changed (or the start time).
	Since          time.Time `json:"since"`
	Runtime        string    `json:"runtime,omitempty"` // e.g. containerd
	RuntimeVersion string    `json:"runtime_version,omitempty"`
	// Reconnects counts connections after the first.
	Reconnects int       `json:"reconnects"`
	Updated    time.Time `json:"updated"`
}

// LockName is the instance lock agentcg-nri holds (flock) in its state dir
// while it runs: one plugin per state dir. `agentcg doctor` tests it to tell
// a live plugin from a stale status file.
const LockName = "agentcg-nri.lock"

// LockPath returns the instance lock path for a state dir.
func LockPath(stateDir string) string { return filepath.Join(stateDir, LockName) }

// StatusPath returns the status file path for a state dir.
func StatusPath(stateDir string) string { return filepath.Join(stateDir, StatusName) }

// ReadStatus reads a status file.
func ReadStatus(path string) (Status, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Status{}, fmt.Errorf("plugin status: %w", err)
	}
	var s Status
	if err := json.Unmarshal(b, &s); err != nil {
		return Status{}, fmt.Errorf("plugin status %s: %w", path, err)
	}
	return s, nil
}

// StatusFile keeps the status file up to date. Writes are atomic; a write
// error is logged, never fatal.
type StatusFile struct {
	path string
	log  *slog.Logger
	mu   sync.Mutex
	s    Status
	ever bool // connected at least once
}

// NewStatusFile writes the initial status (not connected) at path.
func NewStatusFile(path, version, mode string, log *slog.Logger) *StatusFile {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	f := &StatusFile{path: path, log: log, s: Status{Pid: os.Getpid(), Version: version, Mode: mode, Since: time.Now()}}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.write()
	return f
}

// Connected records a change of the connection state.
func (f *StatusFile) Connected(c bool, since time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if c {
		if f.ever {
			f.s.Reconnects++
		}
		f.ever = true
	}
	f.s.Connected, f.s.Since = c, since
	f.write()
}

// Runtime records the runtime's name and version (from Configure).
func (f *StatusFile) Runtime(name, version string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.s.Runtime, f.s.RuntimeVersion = name, version
	f.write()
}

// Remove deletes the file at a clean exit.
func (f *StatusFile) Remove() {
	if err := os.Remove(f.path); err != nil && !os.IsNotExist(err) {
		f.log.Warn("remove status file", "path", f.path, "err", err)
	}
}

func (f *StatusFile) write() {
	f.s.Updated = time.Now()
	if err := jsonfile.Write(f.path, f.s); err != nil {
		f.log.Warn("status file", "err", err)
	}
}
