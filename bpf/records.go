package bpf

import (
	"context"
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

// records is the record dir. seen, when set (tests), is told the name of
// every record file read, and "" for every listing of the folder.
type records struct {
	dir  string
	seen func(name string)
}

func (r records) saw(name string) {
	if r.seen != nil {
		r.seen(name)
	}
}

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

// get reads the record of one cgroup id: fs.ErrNotExist when there is none,
// another error when the file is unreadable.
func (r records) get(id uint64) (record, error) {
	name := strconv.FormatUint(id, 10) + ".json"
	r.saw(name)
	return readRecord(filepath.Join(r.dir, name))
}

// badRecord is a record file that could not be read or decoded.
type badRecord struct {
	id   uint64 // from the file name; 0 when the name is not <id>.json
	name string
	err  error
}

// all returns every readable record and the record files it skipped: one corrupt file never hides the others (design §6).
func (r records) all() ([]record, []badRecord, error) {
	r.saw("")
	ents, err := os.ReadDir(r.dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("read record dir %s: %w", r.dir, err)
	}
	var out []record
	var bad []badRecord
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".json") || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		r.saw(e.Name())
		rec, err := readRecord(filepath.Join(r.dir, e.Name()))
		if err != nil {
			id, _ := strconv.ParseUint(strings.TrimSuffix(e.Name(), ".json"), 10, 64)
			bad = append(bad, badRecord{id: id, name: e.Name(), err: err})
			continue
		}
		out = append(out, rec)
	}
	return out, bad, nil
}

func readRecord(path string) (record, error) {
	var rec record
	b, err := os.ReadFile(path)
	if err != nil {
		return rec, fmt.Errorf("read record: %w", err)
	}
	if err := json.Unmarshal(b, &rec); err != nil {
		return rec, fmt.Errorf("parse record %s: %w", path, err)
	}
	return rec, nil
}

// Locks (bpf/README.md, "Locks"): everything that changes one cgroup's
// attachment holds that cgroup id's lock (lockID), so processes (CLI, hook,
// plugin) and goroutines working on different cgroups never wait on each
// other; DetachAll holds the whole folder (lockAll), which waits for every
// id holder and keeps new ones out. Every wait ends with ctx, or after
// dirlock.DefaultTimeout.

// lockID takes the record dir shared and the id's own lock exclusive.
func (r records) lockID(ctx context.Context, id uint64) (func(), error) {
	return dirlock.LockKey(ctx, r.dir, strconv.FormatUint(id, 10))
}

// tryID takes the id's lock without waiting, for a caller holding lockShared.
func (r records) tryID(id uint64) (func(), bool, error) {
	return dirlock.TryKey(r.dir, strconv.FormatUint(id, 10))
}

// lockShared keeps DetachAll out without excluding anyone else (Reconcile).
func (r records) lockShared(ctx context.Context) (func(), error) {
	return dirlock.LockShared(ctx, r.dir)
}

// lockAll excludes every other holder (DetachAll).
func (r records) lockAll(ctx context.Context) (func(), error) { return dirlock.LockContext(ctx, r.dir) }

// alive reports whether the cgroup of rec still exists as the same cgroup
// (same path and same id; a recreated directory has a new id).
func alive(rec record) bool {
	var st unix.Stat_t
	return unix.Stat(rec.CgroupPath, &st) == nil && st.Ino == rec.CgroupID
}
