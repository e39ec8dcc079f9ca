package bench

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/sluice-shuffle/sluice/tools/fsck"
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
