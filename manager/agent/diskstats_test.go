package agent

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

func TestDiskUtilization(t *testing.T) {
	proc, sys := t.TempDir(), t.TempDir()
	write := func(sdaTicks, sdbTicks int) {
		line := func(minor int, name string, ticks int) string {
			// major minor name reads merged sectors ms writes merged sectors ms inflight io_ticks weighted
			return "   8       " + strconv.Itoa(minor) + " " + name + " 100 0 800 50 100 0 800 50 0 " + strconv.Itoa(ticks) + " 100\n"
		}
		if err := os.WriteFile(filepath.Join(proc, "diskstats"), []byte(line(0, "sda", sdaTicks)+line(16, "sdb", sdbTicks)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	u, err := NewDiskUtilization(proc, sys)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1000, 0)
	u.now = func() time.Time { return now }
	write(1000, 5000)
	first, err := u.Sample()
	if err != nil || len(first) != 0 {
		t.Fatalf("first sample %v %v", first, err)
	}
	now = now.Add(2 * time.Second)
	write(1500, 9000) // sda busy 500 of 2000 ms; sdb more than the interval
	got, err := u.Sample()
	if err != nil {
		t.Fatal(err)
	}
	if got[Device{8, 0}] != 0.25 || got[Device{8, 16}] != 1 {
		t.Fatalf("utilization %v", got)
	}
}

func TestDeviceOf(t *testing.T) {
	if _, err := DeviceOf(t.TempDir()); err != nil {
		t.Fatal(err)
	}
	if _, err := DeviceOf("/does/not/exist"); err == nil {
		t.Fatal("no error for a missing path")
	}
}
