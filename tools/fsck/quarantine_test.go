package fsck

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// TestManifestDirectorySynced checks that appending to a manifest makes its
// directory entries durable: the quarantine directory's missing parents and
// the directory holding MANIFEST.jsonl are synced, the latter after the
// manifest exists (a synced file under a name a crash can lose is no record).
func TestManifestDirectorySynced(t *testing.T) {
	type call struct {
		dir      string
		manifest bool // the manifest existed when dir was synced
	}
	var calls []call
	root := t.TempDir()
	qdir := filepath.Join(root, "new", "quarantine")
	orig := syncDir
	syncDir = func(dir string) error {
		_, err := os.Stat(filepath.Join(qdir, ManifestFile))
		calls = append(calls, call{dir, err == nil})
		return orig(dir)
	}
	t.Cleanup(func() { syncDir = orig })

	for i := range 2 {
		calls = nil
		m := ManifestEntry{Action: ActionReleased, File: "x", LSN: uint64(i + 1)}
		if err := appendManifest(qdir, &m); err != nil {
			t.Fatal(err)
		}
		var want []call
		if i == 0 {
			want = []call{{root, false}, {filepath.Join(root, "new"), false}}
		}
		want = append(want, call{qdir, true})
		if !slices.Equal(calls, want) {
			t.Errorf("append %d: synced %+v, want %+v", i, calls, want)
		}
	}
	man, err := readManifest(qdir)
	if err != nil || len(man) != 2 || man[1].LSN != 2 {
		t.Fatalf("manifest %+v, %v", man, err)
	}
}
