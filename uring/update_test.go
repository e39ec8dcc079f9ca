package uring

import (
	"os"
	"os/exec"
	"testing"
)

// TestUpdateFilesAcrossStackGrowth calls UpdateFiles with its fd table on
// the caller's stack, at every stack depth up to a few pages, so that for
// some depth the goroutine's stack grows (and moves) between UpdateFiles
// building its io_uring_files_update and the syscall reading it. It runs in
// a child process with GODEBUG=efence=1, under which the runtime unmaps
// every stack it moved away from: a table address that was not updated with
// the move then faults in the kernel (EFAULT) instead of reading stale
// memory that happens to hold the right bytes.
func TestUpdateFilesAcrossStackGrowth(t *testing.T) {
	if os.Getenv("SLUICE_URING_EFENCE_CHILD") == "1" {
		updateFilesAtEveryDepth(t)
		return
	}
	if err := Probe(); err != nil {
		t.Skipf("io_uring unusable here: %v", err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestUpdateFilesAcrossStackGrowth$", "-test.count=1")
	cmd.Env = append(os.Environ(), "SLUICE_URING_EFENCE_CHILD=1", "GODEBUG=efence=1")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("child with GODEBUG=efence=1: %v\n%s", err, out)
	}
}

func updateFilesAtEveryDepth(t *testing.T) {
	r := newRing(t, Params{Entries: 4})
	if err := r.RegisterFiles([]int32{-1}); err != nil {
		t.Fatal(err)
	}
	fd := int32(openDirect(t))
	for depth := range 512 {
		errc := make(chan error, 1)
		// A fresh goroutine starts with the smallest stack, so the growth
		// happens at a depth this loop reaches.
		go func() { errc <- atDepth(depth, func() error { return r.UpdateFiles(0, []int32{fd}) }) }()
		if err := <-errc; err != nil {
			t.Fatalf("UpdateFiles at stack depth %d: %v", depth, err)
		}
	}
}

// atDepth calls fn below depth frames of 64 bytes each.
//
//go:noinline
func atDepth(depth int, fn func() error) error {
	var pad [64]byte
	if depth == 0 {
		return fn()
	}
	pad[depth%len(pad)] = byte(depth)
	err := atDepth(depth-1, fn)
	if pad[depth%len(pad)] != byte(depth) {
		panic("stack frame corrupted")
	}
	return err
}
