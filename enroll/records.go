package enroll

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/agentcg/agentcg/internal/jsonfile"
	"github.com/agentcg/agentcg/policy"
)

// Record is what the enroller remembers about one enrolled container, so
// that Unenroll works after the container and its cgroup are gone.
type Record struct {
	ID        string          `json:"id"`
	CgroupDir string          `json:"cgroup_dir"`
	Priority  policy.Priority `json:"priority"`
	Mode      policy.Mode     `json:"mode"`
}

// Records stores one JSON file per container id in a directory. Files are
// written atomically so that a crash never leaves a half record.
type Records struct{ Dir string }

func (s Records) path(id string) (string, error) {
	if id == "" || strings.ContainsAny(id, "/\x00") || id == "." || id == ".." {
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

// Get returns the record of id; ok is false when there is none.
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
		return Record{}, false, fmt.Errorf("read record %s: %w", p, err)
	}
	if err := json.Unmarshal(b, &rec); err != nil {
		return Record{}, false, fmt.Errorf("parse record %s: %w", p, err)
	}
	return rec, true, nil
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

// List returns every record in the directory.
func (s Records) List() ([]Record, error) {
	ents, err := os.ReadDir(s.Dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("state dir %s: %w", s.Dir, err)
	}
	var out []Record
	for _, e := range ents {
		id, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		rec, found, err := s.Get(id)
		if err != nil {
			return nil, err
		}
		if found {
			out = append(out, rec)
		}
	}
	return out, nil
}
