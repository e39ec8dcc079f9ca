package bench

import (
	"context"
	"os/exec"
	"testing"
)

func TestMedianAndPercentile(t *testing.T) {
	cases := []struct {
		xs          []float64
		median, p99 float64
	}{
		{nil, 0, 0},
		{[]float64{3}, 3, 3},
		{[]float64{5, 1, 3}, 3, 5},
		{[]float64{4, 1, 3, 2}, 2.5, 4},
	}
	for _, c := range cases {
		if got := Median(c.xs); got != c.median {
			t.Errorf("Median(%v) = %v, want %v", c.xs, got, c.median)
		}
		if got := Percentile(c.xs, 99); got != c.p99 {
			t.Errorf("Percentile(%v, 99) = %v, want %v", c.xs, got, c.p99)
		}
	}
	if got := Percentile([]float64{10, 20, 30, 40}, 50); got != 20 {
		t.Errorf("p50 by nearest rank = %v, want 20", got)
	}
}

func TestFioBandwidthParsing(t *testing.T) {
	out := []byte(`fio: warning\n{"jobs":[{"jobname":"w","write":{"bw_bytes":2147483648},"read":{"bw_bytes":0}}]}`)
	if bw, err := fioBandwidth(out, "write"); err != nil || bw != 2<<30 {
		t.Fatalf("write bandwidth %v, %v", bw, err)
	}
	if _, err := fioBandwidth(out, "read"); err == nil {
		t.Fatal("zero read bandwidth accepted")
	}
	if _, err := fioBandwidth([]byte(`{"jobs":[]}`), "write"); err == nil {
		t.Fatal("no jobs accepted")
	}
}

func TestDiskAgainstFio(t *testing.T) {
	if _, err := exec.LookPath("fio"); err != nil {
		t.Skip("fio not installed")
	}
	rep, err := DiskRuns(context.Background(), DiskConfig{Dir: t.TempDir(), Size: 16 << 20, Block: 1 << 20, Depth: 4}, 1, true, nil)
	if err != nil {
		t.Fatal(err)
	}
	if rep.FioWriteMiBs <= 0 || rep.FioReadMiBs <= 0 || rep.WriteRatio <= 0 || rep.ReadRatio <= 0 {
		t.Fatalf("report without fio figures: %+v", rep)
	}
}
