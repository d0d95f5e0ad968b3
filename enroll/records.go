package enroll

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/agentcg/agentcg/internal/jsonfile"
	"github.com/agentcg/agentcg/policy"
)

// Door names the front door that enrolled a container. Each door owns its
// records: a reconcile only ever removes records of its own door.
type Door string

const (
	DoorNRI  Door = "nri"  // the NRI plugin (containerd CRI)
	DoorHook Door = "hook" // the OCI hook (Docker, podman, CRI-O)
)

// ParseDoor accepts nri or hook.
func ParseDoor(s string) (Door, error) {
	switch d := Door(s); d {
	case DoorNRI, DoorHook:
		return d, nil
	}
	return "", fmt.Errorf("invalid door %q: allowed values are nri, hook", s)
}

// Record is what the enroller remembers about one enrolled container, so
// that Unenroll works after the container and its cgroup are gone.
type Record struct {
	ID        string          `json:"id"`
	Door      Door            `json:"door"`
	CgroupDir string          `json:"cgroup_dir"`
	Priority  policy.Priority `json:"priority"`
	// Mode is the mechanism that attached; detach goes through it even if
	// the configured mode changed since.
	Mode policy.Mode `json:"mode"`
}

// ErrBadRecord means a record file could not be read or decoded.
var ErrBadRecord = errors.New("unreadable record")

// BadRecord is a record file that List skipped.
type BadRecord struct {
	ID   string
	Path string
	Err  error
}

// Records stores one JSON file per container id in a directory. Files are
// written atomically and durably (jsonfile) so that a crash never leaves a
// half record.
type Records struct{ Dir string }

func (s Records) path(id string) (string, error) {
	if id == "" || strings.ContainsAny(id, "/\x00") || id == "." || id == ".." || strings.HasPrefix(id, ".") {
		return "", fmt.Errorf("invalid container id %q", id)
	}
	return filepath.Join(s.Dir, id+".json"), nil
}

// Put writes the record for rec.ID.
func (s Records) Put(rec Record) error {
	p, err := s.path(rec.ID)
	if err != nil {
		return err
	}
	if err := jsonfile.Write(p, rec); err != nil {
		return fmt.Errorf("record %s: %w", rec.ID, err)
	}
	return nil
}

// Get returns the record of id; ok is false when there is none. A record
// that cannot be read or decoded is an error wrapping ErrBadRecord.
func (s Records) Get(id string) (rec Record, ok bool, err error) {
	p, err := s.path(id)
	if err != nil {
		return Record{}, false, err
	}
	b, err := os.ReadFile(p)
	if errors.Is(err, os.ErrNotExist) {
		return Record{}, false, nil
	}
	if err != nil {
		return Record{}, false, fmt.Errorf("%w %s: %w", ErrBadRecord, p, err)
	}
	rec, err = DecodeRecord(b)
	if err != nil {
		return Record{}, false, fmt.Errorf("%w %s: %w", ErrBadRecord, p, err)
	}
	if rec.ID != id {
		return Record{}, false, fmt.Errorf("%w %s: holds id %q", ErrBadRecord, p, rec.ID)
	}
	return rec, true, nil
}

// DecodeRecord parses one record file, rejecting unknown fields and values
// that a reader could not act on.
func DecodeRecord(b []byte) (Record, error) {
	var rec Record
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&rec); err != nil {
		return Record{}, fmt.Errorf("decode: %w", err)
	}
	if dec.More() {
		return Record{}, errors.New("decode: trailing data after the record")
	}
	if rec.ID == "" {
		return Record{}, errors.New("no id")
	}
	if rec.Door != "" {
		if _, err := ParseDoor(string(rec.Door)); err != nil {
			return Record{}, err
		}
	}
	if _, err := policy.ParsePriority(string(rec.Priority)); err != nil {
		return Record{}, err
	}
	if rec.Mode != "" && rec.Mode != policy.ModeBPF && rec.Mode != policy.ModeNative {
		return Record{}, fmt.Errorf("invalid mode %q: allowed values are bpf, native", rec.Mode)
	}
	if !filepath.IsAbs(rec.CgroupDir) {
		return Record{}, fmt.Errorf("cgroup_dir %q: not an absolute path", rec.CgroupDir)
	}
	return rec, nil
}

// Delete removes the record of id; a missing record is not an error.
func (s Records) Delete(id string) error {
	p, err := s.path(id)
	if err != nil {
		return err
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove record %s: %w", p, err)
	}
	return nil
}

// Quarantine moves the unreadable record of id aside, to .corrupt-<id>.json
// (List skips dot files), so that it stops being reported and an operator
// can still look at it.
func (s Records) Quarantine(id string) (string, error) {
	p, err := s.path(id)
	if err != nil {
		return "", err
	}
	to := filepath.Join(s.Dir, ".corrupt-"+id+".json")
	if err := os.Rename(p, to); err != nil && !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("quarantine record %s: %w", p, err)
	}
	return to, nil
}

// List returns every readable record in the directory. Unreadable ones are
// skipped and returned in bad: one corrupt file never hides the others.
// err is set only when the directory itself cannot be read.
func (s Records) List() (recs []Record, bad []BadRecord, err error) {
	ents, err := os.ReadDir(s.Dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("state dir %s: %w", s.Dir, err)
	}
	for _, e := range ents {
		id, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		rec, found, err := s.Get(id)
		if err != nil {
			bad = append(bad, BadRecord{ID: id, Path: filepath.Join(s.Dir, e.Name()), Err: err})
			continue
		}
		if found {
			recs = append(recs, rec)
		}
	}
	return recs, bad, nil
}
