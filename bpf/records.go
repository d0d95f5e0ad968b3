package bpf

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/agentcg/agentcg/internal/dirlock"
	"github.com/agentcg/agentcg/internal/jsonfile"
	"github.com/agentcg/agentcg/policy"
	"golang.org/x/sys/unix"
)

// DefaultRecordDir keeps one record per attachment outside bpffs, so that a
// link can be found by cgroup path after the cgroup directory is gone.
const DefaultRecordDir = "/run/agentcg/links"

// record is the on-disk form of one attachment: RecordDir/<cgroup id>.json.
type record struct {
	CgroupID   uint64          `json:"cgroup_id"`
	CgroupPath string          `json:"cgroup_path"`
	Priority   policy.Priority `json:"priority"`
	PinPath    string          `json:"pin_path"`
}

// RecordDirFor is the default record dir of a pin dir: DefaultRecordDir for
// policy.DefaultPinDir, a sibling named after the pin dir otherwise, so that
// policies with different pin dirs never see each other's records.
func RecordDirFor(pinDir string) string {
	if filepath.Clean(pinDir) == policy.DefaultPinDir {
		return DefaultRecordDir
	}
	return DefaultRecordDir + "-" + strings.ReplaceAll(strings.Trim(filepath.Clean(pinDir), "/"), "/", "_")
}

type records struct{ dir string }

func (r records) path(id uint64) string {
	return filepath.Join(r.dir, strconv.FormatUint(id, 10)+".json")
}

func (r records) put(rec record) error {
	if err := jsonfile.Write(r.path(rec.CgroupID), rec); err != nil {
		return fmt.Errorf("record of %s: %w", rec.CgroupPath, err)
	}
	return nil
}

func (r records) remove(id uint64) error {
	if err := os.Remove(r.path(id)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove record of cgroup %d: %w", id, err)
	}
	return nil
}

// all returns every record, sorted by cgroup id.
func (r records) all() ([]record, error) {
	ents, err := os.ReadDir(r.dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read record dir: %w", err)
	}
	var out []record
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(r.dir, e.Name()))
		if err != nil {
			return nil, fmt.Errorf("read record: %w", err)
		}
		var rec record
		if err := json.Unmarshal(b, &rec); err != nil {
			return nil, fmt.Errorf("parse record %s: %w", e.Name(), err)
		}
		out = append(out, rec)
	}
	return out, nil
}

// lock takes an exclusive flock on the record dir, serialising attach,
// detach and reconcile across processes (CLI, hook, plugin).
func (r records) lock() (func(), error) { return dirlock.Lock(r.dir) }

// alive reports whether the cgroup of rec still exists as the same cgroup
// (same path and same id; a recreated directory has a new id).
func alive(rec record) bool {
	var st unix.Stat_t
	return unix.Stat(rec.CgroupPath, &st) == nil && st.Ino == rec.CgroupID
}
