package jsonfile

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
)

func TestWriteReplacesAndLeavesNoTemp(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sub", "rec.json")
	for _, v := range []int{1, 2} {
		if err := Write(path, map[string]int{"v": v}); err != nil {
			t.Fatal(err)
		}
	}
	var got map[string]int
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &got); err != nil || got["v"] != 2 {
		t.Fatalf("content %q, %v", b, err)
	}
	ents, _ := os.ReadDir(filepath.Dir(path))
	if len(ents) != 1 {
		t.Errorf("folder holds %d entries, want only rec.json", len(ents))
	}
	if err := Write(path, func() {}); err == nil {
		t.Error("encoding a func succeeded")
	}
}
