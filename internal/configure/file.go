package configure

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// Result is what Apply did to one file.
type Result struct {
	File     string    `json:"file"`
	Changes  []Finding `json:"changes"`
	Backup   string    `json:"backup,omitempty"` // copy of the old file ("" when none existed or nothing changed)
	Written  bool      `json:"written"`
	Contents []byte    `json:"-"` // the new contents (for --dry-run)
}

// EditFunc turns a config file's contents into the edited contents and the
// changes made.
type EditFunc func(doc []byte) ([]byte, []Finding, error)

// Apply runs edit on file (a missing file reads as empty). With changes and
// not dryRun, it copies the old file to <file>.agentcg-backup-<UTC time>
// and replaces the file atomically (same mode, fsync before rename).
// Nothing is written when there is nothing to change.
func Apply(file string, edit EditFunc, dryRun bool, now time.Time) (Result, error) {
	res := Result{File: file}
	doc, err := os.ReadFile(file)
	mode := fs.FileMode(0o644)
	exists := err == nil
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return res, fmt.Errorf("%s: %w", file, err)
	default:
		if st, err := os.Stat(file); err == nil {
			mode = st.Mode().Perm()
		}
	}
	out, changes, err := edit(doc)
	if err != nil {
		return res, fmt.Errorf("%s: %w", file, err)
	}
	res.Changes, res.Contents = changes, out
	if len(changes) == 0 || dryRun {
		return res, nil
	}
	if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
		return res, err
	}
	if exists {
		res.Backup = file + ".agentcg-backup-" + now.UTC().Format("20060102T150405Z")
		if err := writeAtomic(res.Backup, doc, mode); err != nil {
			return res, fmt.Errorf("backup: %w", err)
		}
	}
	if err := writeAtomic(file, out, mode); err != nil {
		return res, err
	}
	res.Written = true
	return res, nil
}

func writeAtomic(file string, data []byte, mode fs.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(file), "."+filepath.Base(file)+".tmp-")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("%s: %w", file, err)
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return fmt.Errorf("%s: %w", file, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("%s: %w", file, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("%s: %w", file, err)
	}
	if err := os.Rename(tmp.Name(), file); err != nil {
		return fmt.Errorf("%s: %w", file, err)
	}
	return nil
}
