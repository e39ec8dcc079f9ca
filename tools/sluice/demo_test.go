package main

import (
	"bytes"
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// small is a demo that runs in a few seconds under -race.
var small = []string{"--records", "200000", "--producers", "4", "--consumers", "8", "--workers", "2", "--pool-size", "64MiB", "--parallel", "2"}

func TestDemo(t *testing.T) {
	code, out, errOut := run(t, append([]string{"demo"}, small...)...)
	if code != 0 {
		t.Fatalf("demo: exit %d\n%s\n%s", code, out, errOut)
	}
	for _, want := range []string{"map      write", "map      read+sort", "reduce   write", "reduce   read+sort", "validation passed", "200000 records"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

// TestDemoDetectsCorruption flips one byte in the middle of every stored
// MapPartition between the write and the read: the demo must report
// corrupt data naming a partition and exit 1, never validate.
func TestDemoDetectsCorruption(t *testing.T) {
	flipped := 0
	hooks := demoHooks{afterWrite: func(mode string, lc *localCluster) error {
		return filepath.WalkDir(lc.Dir(), func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() || !strings.HasPrefix(d.Name(), "map-") {
				return err
			}
			f, err := os.OpenFile(path, os.O_RDWR, 0)
			if err != nil {
				return err
			}
			defer f.Close()
			st, err := f.Stat()
			if err != nil {
				return err
			}
			b := make([]byte, 1)
			off := st.Size() / 2
			if _, err := f.ReadAt(b, off); err != nil {
				return err
			}
			b[0] ^= 0x10
			if _, err := f.WriteAt(b, off); err != nil {
				return err
			}
			flipped++
			return f.Sync()
		})
	}}
	var out, errOut bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	code := demoMain(ctx, append(small, "--modes", "map"), &out, &errOut, hooks)
	if flipped == 0 {
		t.Fatalf("no MapPartition file found to corrupt (exit %d)\n%s\n%s", code, out.String(), errOut.String())
	}
	if code != 1 {
		t.Fatalf("demo over corrupt data: exit %d, want 1\n%s\n%s", code, out.String(), errOut.String())
	}
	if s := out.String(); !strings.Contains(s, "VALIDATION FAILED") || !strings.Contains(s, "corrupt data in MapPartition") || strings.Contains(s, "validation passed") {
		t.Fatalf("the report does not name the corrupt partition:\n%s", s)
	}
}

func TestDemoAndLocalSettings(t *testing.T) {
	cfgFile := filepath.Join(t.TempDir(), "demo.yaml")
	if err := os.WriteFile(cfgFile, []byte("records: 1000\nwokers: 3\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"demo", "--config", cfgFile}, `"wokers"`},
		{[]string{"local", "--config", cfgFile}, `"records"`}, // a demo key is not a local key
		{[]string{"demo", "--modes", "map,sort"}, `"sort" is neither map nor reduce`},
		{[]string{"demo", "--workers", "0"}, "workers: 0"},
		{[]string{"demo", "--buffer-size", "1000"}, "buffer-size"},
		{[]string{"local", "--io-backend", "floppy"}, "io-backend"},
		{[]string{"local", "extra"}, "unexpected arguments"},
	} {
		code, _, errOut := run(t, tc.args...)
		if code != 2 || !strings.Contains(errOut, tc.want) {
			t.Errorf("%q: exit %d, want 2 with %q in:\n%s", tc.args, code, tc.want, errOut)
		}
	}
	t.Setenv("SLUICE_DEMO_PRODUCERS", "-1")
	if code, _, errOut := run(t, "demo"); code != 2 || !strings.Contains(errOut, "producers: -1") {
		t.Errorf("environment override: exit %d\n%s", code, errOut)
	}
}

// syncBuffer is a bytes.Buffer safe for a writer and a reader at once.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// TestLocal runs `sluice local` on a directory until it is told to stop,
// and checks it announced a manager and its workers, and left its data.
func TestLocal(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	var out, errOut syncBuffer
	done := make(chan int, 1)
	go func() {
		done <- dispatch(ctx, []string{"local", "--dir", dir, "--workers", "2", "--pool-size", "32MiB", "--log-level", "warn"}, &out, &errOut)
	}()
	deadline := time.Now().Add(60 * time.Second)
	for !strings.Contains(out.String(), "worker 1 data plane") {
		if time.Now().After(deadline) {
			t.Fatalf("local did not announce its workers:\n%s\n%s", out.String(), errOut.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	if code := <-done; code != 0 {
		t.Fatalf("local: exit %d\n%s", code, errOut.String())
	}
	if s := out.String(); !strings.Contains(s, "manager 127.0.0.1:") || !strings.Contains(s, "worker 0 data plane 127.0.0.1:") {
		t.Fatalf("local's output:\n%s", s)
	}
	for _, w := range []string{"worker-0", "worker-1"} {
		if _, err := os.Stat(filepath.Join(dir, w)); err != nil {
			t.Errorf("data directory %s: %v", w, err)
		}
	}
}
