package bench

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/sluice-shuffle/sluice/tools/fsck"
	"golang.org/x/sys/unix"
)

func TestFsckBench(t *testing.T) {
	withFio := true
	if _, err := exec.LookPath("fio"); err != nil {
		withFio = false
		t.Log("fio not installed: measuring fsck alone")
	}
	dir := t.TempDir()
	cfg := FsckConfig{Dir: dir, Size: 6 << 20, FileBytes: 2 << 20, RegionBytes: 512 << 10, BufferBytes: 64 << 10, Subpartitions: 100, ReadBytes: 1 << 20}
	var seen int
	rep, err := FsckRuns(context.Background(), cfg, 2, withFio, func(int, FsckRun) { seen++ })
	if err != nil {
		t.Fatal(err)
	}
	if rep.Bench != "fsck" || rep.Runs != 2 || seen != 2 || rep.Files != 3 || rep.Bytes < cfg.Size || rep.FsckMiBs <= 0 {
		t.Fatalf("report %+v", rep)
	}
	if withFio && (rep.FioReadMiBs <= 0 || rep.Ratio <= 0) {
		t.Fatalf("report without fio figures: %+v", rep)
	}
	if _, err := os.Stat(filepath.Join(dir, "sluice-bench-fsck")); !os.IsNotExist(err) {
		t.Fatalf("work directory left behind: %v", err)
	}
}

// TestFsckBenchDisk: the benchmark's disk is one fsck finds clean, with
// many regions per partition, and a kept disk is reused.
func TestFsckBenchDisk(t *testing.T) {
	dir := t.TempDir()
	cfg := FsckConfig{Dir: dir, Size: 3 << 20, FileBytes: 1 << 20, RegionBytes: 128 << 10, Subpartitions: 50, Keep: true}
	rep, err := FsckRuns(context.Background(), cfg, 1, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	disk := filepath.Join(dir, "sluice-bench-fsck", "disk")
	sum, err := fsck.Check(context.Background(), []string{disk}, fsck.Options{}, func(r *fsck.Result) {
		if r.Status != fsck.StatusOK {
			t.Errorf("%s", fsck.FormatResult(r))
		}
	})
	if err != nil || sum.Exit != 0 || sum.Partitions != rep.Files {
		t.Fatalf("fsck of the benchmark's disk: %+v, %v", sum, err)
	}
	st, err := os.Stat(filepath.Join(disk, "IDENTITY"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := FsckRuns(context.Background(), cfg, 1, false, nil); err != nil {
		t.Fatal(err)
	}
	if st2, err := os.Stat(filepath.Join(disk, "IDENTITY")); err != nil || !st2.ModTime().Equal(st.ModTime()) {
		t.Fatalf("the kept disk was not reused (%v)", err)
	}
}

// TestFsckBenchDiskNotRemovable: a stale disk directory that cannot be
// removed is an error, not a directory the new disk is written over.
func TestFsckBenchDiskNotRemovable(t *testing.T) {
	disk := filepath.Join(t.TempDir(), "sluice-bench-fsck", "disk")
	if err := os.MkdirAll(disk, 0o755); err != nil {
		t.Fatal(err)
	}
	stuck := filepath.Join(disk, "stuck")
	if err := os.WriteFile(stuck, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	setImmutable(t, stuck)
	cfg := FsckConfig{Size: 1 << 20, FileBytes: 1 << 20, RegionBytes: 128 << 10, Subpartitions: 10}
	cfg.defaults()
	if _, _, err := ensureFsckDisk(context.Background(), disk, &cfg); err == nil {
		t.Fatal("ensureFsckDisk wrote over a stale disk it could not remove")
	}
}

// fsImmutableFL is FS_IMMUTABLE_FL of linux/fs.h, which x/sys/unix does not
// export.
const fsImmutableFL = 0x10

// setImmutable sets FS_IMMUTABLE_FL on path (chattr +i), so that not even
// root may remove it, and clears it when the test ends. It skips the test
// where the filesystem or the privileges do not allow it.
func setImmutable(t *testing.T, path string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	flags, err := unix.IoctlGetUint32(int(f.Fd()), unix.FS_IOC_GETFLAGS)
	if err != nil {
		t.Skipf("FS_IOC_GETFLAGS on %s: %v", path, err)
	}
	if err := unix.IoctlSetPointerInt(int(f.Fd()), unix.FS_IOC_SETFLAGS, int(flags|fsImmutableFL)); err != nil {
		t.Skipf("cannot make %s immutable: %v", path, err)
	}
	t.Cleanup(func() {
		f, err := os.Open(path)
		if err != nil {
			t.Error(err)
			return
		}
		defer f.Close()
		if err := unix.IoctlSetPointerInt(int(f.Fd()), unix.FS_IOC_SETFLAGS, int(flags)); err != nil {
			t.Errorf("clearing the immutable flag of %s: %v", path, err)
		}
	})
}
