package diskio

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// TestPreallocate checks that Preallocate extends the file with zeros, that
// Truncate trims it back, and that a failure is an *OpError errors.Is
// recognises.
func TestPreallocate(t *testing.T) {
	io, err := New(Config{Backend: BackendPool, Dir: t.TempDir()})
	if err != nil {
		t.Skipf("no direct IO here: %v", err)
	}
	defer io.Close()
	dir := t.TempDir()
	f, err := io.OpenFile(filepath.Join(dir, "f"), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Preallocate(0, 1<<20); err != nil {
		t.Fatal(err)
	}
	if n, err := f.Size(); err != nil || n != 1<<20 {
		t.Fatalf("after Preallocate: size %d, %v; want %d", n, err, 1<<20)
	}
	b, err := os.ReadFile(f.Name())
	if err != nil {
		t.Fatal(err)
	}
	for i, c := range b {
		if c != 0 {
			t.Fatalf("byte %d of the preallocated range is %#x", i, c)
		}
	}
	if err := f.Truncate(100); err != nil {
		t.Fatal(err)
	}
	if n, _ := f.Size(); n != 100 {
		t.Fatalf("after Truncate: size %d", n)
	}
	// An impossible size fails with EFBIG or ENOSPC, wrapped.
	err = f.Preallocate(0, 1<<62)
	var oe *OpError
	if err == nil || !errors.As(err, &oe) || !(errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EFBIG)) {
		t.Fatalf("huge Preallocate: %v", err)
	}
}
