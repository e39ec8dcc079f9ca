package bench

import (
	"context"
	"os"
	"strconv"
	"testing"

	"github.com/sluice-shuffle/sluice/scheduler"
)

// TestSchedSmall runs every case of the scheduler benchmark on a small
// dataset: every byte must arrive (checked inside), and the HDD model must
// rank the elevator far ahead of FIFO. No timing is asserted.
func TestSchedSmall(t *testing.T) {
	cfg := DefaultSchedConfig(t.TempDir())
	cfg.Files, cfg.Subpartitions, cfg.FileBytes, cfg.Window = 6, 60, 2<<20, 8
	cfg.BufferBytes, cfg.BudgetBytes, cfg.CacheBytes, cfg.MaxReadBytes = 64<<10, 32<<20, 16<<20, 512<<10
	rep, err := SchedRuns(context.Background(), cfg, 1, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if rep.SeekRatio < 5 || rep.ModelRatio < 2 {
		t.Errorf("elevator vs FIFO: %.1fx fewer seeks, %.1fx less model time", rep.SeekRatio, rep.ModelRatio)
	}
	if rep.StaggeredRAHitRatio == 0 {
		t.Error("staggered consumers never hit the read-ahead cache")
	}
	t.Logf("%+v", rep)
}

// TestSchedProfile runs one case of the full-size benchmark when
// SLUICE_SCHED_PROFILE names a directory (for go test -cpuprofile).
func TestSchedProfile(t *testing.T) {
	dir := os.Getenv("SLUICE_SCHED_PROFILE")
	if dir == "" {
		t.Skip("SLUICE_SCHED_PROFILE not set")
	}
	cfg := DefaultSchedConfig(dir)
	envInt := func(name string, dst *int) {
		if v, err := strconv.Atoi(os.Getenv(name)); err == nil {
			*dst = v
		}
	}
	envInt("SLUICE_SCHED_DEPTH", &cfg.Depth)
	envInt("SLUICE_SCHED_BUF", &cfg.BufferBytes)
	envInt("SLUICE_SCHED_DRAINERS", &cfg.Drainers)
	envInt("SLUICE_SCHED_WINDOW", &cfg.Window)
	envInt("SLUICE_SCHED_MAXREAD", &cfg.MaxReadBytes)
	if v, err := strconv.ParseInt(os.Getenv("SLUICE_SCHED_BUDGET"), 10, 64); err == nil {
		cfg.BudgetBytes = v
	}
	if v, err := strconv.ParseInt(os.Getenv("SLUICE_SCHED_CACHE"), 10, 64); err == nil {
		cfg.CacheBytes = v
	}
	cfg.NoVerify = os.Getenv("SLUICE_SCHED_NOVERIFY") != ""
	ds, err := prepareSched(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	d, err := openSchedDisk(cfg, ds)
	if err != nil {
		t.Fatal(err)
	}
	defer d.close()
	pol := scheduler.Elevator
	if os.Getenv("SLUICE_SCHED_FIFO") != "" {
		pol = scheduler.FIFO
	}
	stag, _ := strconv.ParseBool(os.Getenv("SLUICE_SCHED_STAGGERED"))
	ra := os.Getenv("SLUICE_SCHED_NORA") == ""
	for range 2 {
		r, err := d.run(context.Background(), pol, stag, ra)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%+v", r)
		t.Logf("stats %+v", lastStats)
		if tr := lastTrace; tr != nil {
			hist := map[string]int{}
			descents := 0
			for i, x := range tr {
				switch {
				case x.Length < 256<<10:
					hist["<256K"]++
				case x.Length < 1<<20:
					hist["<1M"]++
				case x.Length < 4<<20:
					hist["<4M"]++
				default:
					hist["4M"]++
				}
				if i > 0 && x.Segments[0].Physical < tr[i-1].Segments[0].Physical {
					descents++
				}
			}
			t.Logf("read sizes %v, descents %d", hist, descents)
			type fs struct {
				f    uint64
				slot int64
			}
			first := map[fs]int{}
			var again, total int
			var gaps []float64
			bb := int64(cfg.BufferBytes)
			for i, x := range tr {
				for off := x.Offset / bb * bb; off < x.Offset+x.Length; off += bb {
					k := fs{x.File, off / bb}
					total++
					if j, ok := first[k]; ok {
						again++
						gaps = append(gaps, float64(i-j))
					}
					first[k] = i
				}
			}
			t.Logf("slot reads %d, distinct %d, again %d; reads between: p10 %.0f p50 %.0f p90 %.0f",
				total, len(first), again, Percentile(gaps, 10), Percentile(gaps, 50), Percentile(gaps, 90))
		}
	}
}
