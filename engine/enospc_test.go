package engine

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sluice-shuffle/sluice/layout"
)

// mountSmallExt4 makes a file system of size bytes on a loop device and
// mounts it; it skips the test, saying why, where that is not possible.
// The mount and the image go away in every case.
func mountSmallExt4(t *testing.T, size int64) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("a real ENOSPC needs root to mount a loop-device file system")
	}
	for _, tool := range []string{"mkfs.ext4", "mount", "umount"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed: %v", tool, err)
		}
	}
	base := t.TempDir()
	img, mnt := filepath.Join(base, "disk.img"), filepath.Join(base, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-m", "0", "-b", "4096", img).CombinedOutput(); err != nil {
		t.Skipf("mkfs.ext4: %v: %s", err, out)
	}
	if out, err := exec.Command("mount", "-o", "loop", img, mnt).CombinedOutput(); err != nil {
		t.Skipf("mount -o loop (no loop devices in this container?): %v: %s", err, out)
	}
	t.Cleanup(func() {
		// Lazy unmount as a fallback: a store that failed to close must
		// not leave the mount behind.
		if out, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", mnt, err, out)
			exec.Command("umount", "-l", mnt).Run()
		}
	})
	return mnt
}

// TestRealENOSPC fills a 32 MiB ext4 for real: fallocate or a write fails
// with ENOSPC, the writer gets ErrDiskFull, its partition is removed, the
// disk takes no new partitions, and after a release frees space it takes
// them again.
func TestRealENOSPC(t *testing.T) {
	forBackends(t, func(t *testing.T, backend string) {
		mnt := mountSmallExt4(t, 32<<20)
		cfg := testConfig(backend, mnt)
		cfg.ReserveBytes = -1 // no reserve: the file system itself says no
		ev := &eventLog{}
		cfg.OnEvent = ev.add
		s := openTestStore(t, cfg)
		d := s.Disks()[0]
		if d.dev.Name == "" || !strings.HasPrefix(d.dev.Name, "loop") {
			t.Logf("device behind the mount: %+v", d.dev)
		}
		ctx := context.Background()
		// Committed partitions until the disk is full.
		var full error
		var committed []uint32
		for m := uint32(0); m < 200 && full == nil; m++ {
			var res MapResult
			res, full = writeBig(ctx, s, "fill", m, 40) // 800 KB each
			if full == nil {
				committed = append(committed, m)
				_ = res
			}
		}
		if !errors.Is(full, ErrDiskFull) || !errors.Is(full, syscall.ENOSPC) {
			t.Fatalf("filling the disk ended with %v, want ErrDiskFull from ENOSPC", full)
		}
		t.Logf("%d partitions committed, then: %v", len(committed), full)
		// The failed partition left nothing behind.
		entries, _ := os.ReadDir(filepath.Join(mnt, layout.DatasetDir([]byte("f"), []byte("fill"))))
		if len(entries) != len(committed) {
			t.Fatalf("%d files for %d committed partitions", len(entries), len(committed))
		}
		if d.State() != DiskFull {
			t.Fatalf("disk %v after ENOSPC", d.State())
		}
		ev.wait(t, EventDiskFull)
		if _, err := s.CreateMap(ctx, MapSpec{Job: "f", Dataset: "more", Map: 0, Subpartitions: 4}); !errors.Is(err, ErrNoDisk) {
			t.Fatalf("CreateMap on a full disk: %v", err)
		}
		// Committed data is still served.
		r, err := s.OpenMap("f", "fill", committed[0], 0)
		if err != nil {
			t.Fatal(err)
		}
		r.Close()
		// A release frees the space; the health check puts the disk back.
		if err := s.Release(ctx, "f", "fill"); err != nil {
			t.Fatal(err)
		}
		if err := s.WaitDeletes(ctx); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(5 * time.Second)
		for d.State() != DiskHealthy && time.Now().Before(deadline) {
			s.CheckHealth(ctx)
			time.Sleep(10 * time.Millisecond)
		}
		if d.State() != DiskHealthy {
			t.Fatalf("disk %v after the release, %d bytes free", d.State(), d.Free())
		}
		ev.wait(t, EventDiskRecovered)
		if _, err := writeBig(ctx, s, "again", 0, 10); err != nil {
			t.Fatalf("writing after space came back: %v", err)
		}
		// A size hint larger than the free space: placement refuses it.
		if _, err := s.CreateMap(ctx, MapSpec{Job: "f", Dataset: "huge", Map: 0, Subpartitions: 4, SizeHint: 1 << 30}); !errors.Is(err, ErrNoDisk) {
			t.Fatalf("partition with a size hint beyond the free space: %v", err)
		}
		// A partition that outgrows the disk without a hint: its
		// preallocation (or a write) fails half-way.
		if _, err := writeBig(ctx, s, "huge", 1, 2000); !errors.Is(err, ErrDiskFull) {
			t.Fatalf("partition larger than the disk: %v", err)
		}
		if d.State() != DiskFull {
			t.Fatalf("disk %v", d.State())
		}
		if entries, _ := os.ReadDir(filepath.Join(mnt, layout.DatasetDir([]byte("f"), []byte("huge")))); len(entries) != 0 {
			t.Fatalf("the failed partition left %d files", len(entries))
		}
		s.CheckHealth(ctx)
		if in := s.Pool().Stats().InUse; in != 0 {
			t.Fatalf("%d buffers leaked", in)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		// And the disk recovers cleanly.
		s2 := openTestStore(t, cfg)
		if rep := s2.Recovery(); len(rep.Lost) != 0 || rep.Disks[0].Removed != 0 || rep.Disks[0].Maps != 1 {
			t.Fatalf("recovery after ENOSPC: %+v, lost %+v", rep.Disks[0], rep.Lost)
		}
		s2.Close()
	})
}
