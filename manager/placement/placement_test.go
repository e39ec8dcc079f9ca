package placement

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/sluice-shuffle/sluice/manager/api"
)

const (
	gib = uint64(1) << 30
	mib = uint64(1) << 20
)

type diskSpec struct {
	worker   int
	typ      api.DiskType
	free     uint64
	capacity uint64
	util     float64
	pending  uint64
	down     bool
	sick     string
}

func build(t *testing.T, strategy string, opts Options, specs []diskSpec) (*Placer, []*Disk) {
	t.Helper()
	s, err := NewStrategy(strategy, opts)
	if err != nil {
		t.Fatal(err)
	}
	p := NewPlacer(s, opts)
	var disks []*Disk
	for i, sp := range specs {
		capacity := sp.capacity
		if capacity == 0 {
			capacity = 1000 * gib
		}
		d := &Disk{
			Worker: uint32(sp.worker), WorkerID: fmt.Sprintf("w%d", sp.worker), ID: fmt.Sprintf("d%d", i),
			Type: sp.typ, CapacityBytes: capacity, FreeBytes: sp.free, PendingBytes: sp.pending,
			Utilization: sp.util, Usable: !sp.down && sp.sick == "", Unhealthy: sp.sick,
		}
		p.Update(d)
		disks = append(disks, d)
	}
	return p, disks
}

func uniform(workers, disksPerWorker int, typ api.DiskType, free uint64) []diskSpec {
	var s []diskSpec
	for w := 0; w < workers; w++ {
		for i := 0; i < disksPerWorker; i++ {
			s = append(s, diskSpec{worker: w, typ: typ, free: free})
		}
	}
	return s
}

func place(t *testing.T, p *Placer, req *Request, n int) ([]*Disk, error) {
	t.Helper()
	out := make([]*Disk, n)
	err := p.Place(req, out)
	return out, err
}

func counts(out []*Disk) map[*Disk]int {
	m := map[*Disk]int{}
	for _, d := range out {
		if d != nil {
			m[d]++
		}
	}
	return m
}

// TestBalance: equal disks get equal shares (within one) from both
// strategies, and every disk gets some.
func TestBalance(t *testing.T) {
	for _, strategy := range builtin {
		for _, tc := range []struct {
			name            string
			workers, perW   int
			partitions      int
			maxSpreadPerDsk int
		}{
			{"10x1", 10, 1, 1000, 1},
			{"5x4", 5, 4, 1003, 1},
			{"3x12", 3, 12, 10000, 1},
		} {
			t.Run(strategy+"/"+tc.name, func(t *testing.T) {
				p, disks := build(t, strategy, Options{ReserveBytes: gib, PartitionBytes: mib}, uniform(tc.workers, tc.perW, api.DiskType_HDD, 1000*gib))
				out, err := place(t, p, &Request{}, tc.partitions)
				if err != nil {
					t.Fatal(err)
				}
				c := counts(out)
				lo, hi := tc.partitions, 0
				for _, d := range disks {
					lo, hi = min(lo, c[d]), max(hi, c[d])
				}
				if hi-lo > tc.maxSpreadPerDsk {
					t.Fatalf("per-disk counts range %d..%d, want within %d", lo, hi, tc.maxSpreadPerDsk)
				}
			})
		}
	}
}

// TestReserveRespected: no disk is given more than fits above the reserve,
// and the placement fails (rather than overfilling) once all are full.
func TestReserveRespected(t *testing.T) {
	for _, strategy := range builtin {
		for _, tc := range []struct {
			name    string
			specs   []diskSpec
			reserve uint64
			bytes   uint64
			n       int
			wantErr bool
		}{
			{"room for all", []diskSpec{{free: 10 * gib}, {worker: 1, free: 10 * gib}}, 5 * gib, gib, 10, false},
			{"exactly full", []diskSpec{{free: 10 * gib}, {worker: 1, free: 10 * gib}}, 5 * gib, gib, 10, false},
			{"one too many", []diskSpec{{free: 10 * gib}, {worker: 1, free: 10 * gib}}, 5 * gib, gib, 11, true},
			{"pending counts", []diskSpec{{free: 10 * gib, pending: 4 * gib}, {worker: 1, free: 10 * gib}}, 5 * gib, gib, 7, true},
			{"below reserve from start", []diskSpec{{free: 5 * gib}}, 5 * gib, mib, 1, true},
		} {
			t.Run(strategy+"/"+tc.name, func(t *testing.T) {
				p, disks := build(t, strategy, Options{ReserveBytes: tc.reserve, PartitionBytes: tc.bytes}, tc.specs)
				_, err := place(t, p, &Request{}, tc.n)
				if (err != nil) != tc.wantErr {
					t.Fatalf("err = %v, want error %v", err, tc.wantErr)
				}
				for i, d := range disks {
					if d.FreeBytes < d.PendingBytes+d.ReservedBytes || d.AvailableBytes() < tc.reserve && d.ReservedBytes > 0 {
						t.Fatalf("disk %d overcommitted: free %d pending %d reserved %d reserve %d", i, d.FreeBytes, d.PendingBytes, d.ReservedBytes, tc.reserve)
					}
				}
			})
		}
	}
}

// TestTypePreference: the preferred type takes everything while it
// qualifies, the other type takes the rest, and no preference uses both.
func TestTypePreference(t *testing.T) {
	specs := []diskSpec{
		{worker: 0, typ: api.DiskType_SSD, free: 12 * gib},
		{worker: 1, typ: api.DiskType_HDD, free: 1000 * gib},
		{worker: 2, typ: api.DiskType_HDD, free: 1000 * gib},
	}
	opts := Options{ReserveBytes: 2 * gib, PartitionBytes: gib}
	for _, strategy := range builtin {
		for _, tc := range []struct {
			name      string
			preferred api.DiskType
			n         int
			wantSSD   int
		}{
			{"ssd fits", api.DiskType_SSD, 10, 10},
			{"ssd falls back", api.DiskType_SSD, 14, 10},
			{"hdd preferred", api.DiskType_HDD, 10, 0},
		} {
			t.Run(strategy+"/"+tc.name, func(t *testing.T) {
				p, disks := build(t, strategy, opts, specs)
				out, err := place(t, p, &Request{Preferred: tc.preferred}, tc.n)
				if err != nil {
					t.Fatal(err)
				}
				if got := counts(out)[disks[0]]; got != tc.wantSSD {
					t.Fatalf("SSD got %d partitions, want %d", got, tc.wantSSD)
				}
			})
		}
		t.Run(strategy+"/no preference", func(t *testing.T) {
			p, disks := build(t, strategy, opts, specs)
			out, err := place(t, p, &Request{}, 9)
			if err != nil {
				t.Fatal(err)
			}
			c := counts(out)
			for i, d := range disks {
				if c[d] == 0 {
					t.Fatalf("disk %d unused with no preference: %v", i, c)
				}
			}
		})
	}
}

// TestHealthyOnly: unusable disks (lost worker, unhealthy) never get data.
func TestHealthyOnly(t *testing.T) {
	specs := []diskSpec{
		{worker: 0, free: 100 * gib, down: true},
		{worker: 1, free: 100 * gib, sick: "write check failed: EIO"},
		{worker: 2, free: 100 * gib},
	}
	for _, strategy := range builtin {
		t.Run(strategy, func(t *testing.T) {
			p, disks := build(t, strategy, Options{PartitionBytes: mib}, specs)
			out, err := place(t, p, &Request{}, 50)
			if err != nil {
				t.Fatal(err)
			}
			if c := counts(out); c[disks[2]] != 50 {
				t.Fatalf("placements %v, want all 50 on the healthy disk", c)
			}
			// The healthy one fails too: nothing qualifies any more.
			disks[2].Usable, disks[2].Unhealthy = false, "gone"
			p.Update(disks[2])
			if _, err := place(t, p, &Request{}, 1); err == nil {
				t.Fatal("placed on an unhealthy disk")
			}
			// It recovers.
			disks[2].Usable, disks[2].Unhealthy = true, ""
			p.Update(disks[2])
			if _, err := place(t, p, &Request{}, 1); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestLoadAware: a busy disk, or one with much pending work, gets
// proportionally fewer partitions than an idle one.
func TestLoadAware(t *testing.T) {
	for _, tc := range []struct {
		name      string
		specs     []diskSpec
		n         int
		idleShare float64 // minimum share of the first disk
	}{
		{"utilization", []diskSpec{{free: 900 * gib, util: 0.05}, {worker: 1, free: 900 * gib, util: 0.9}}, 1000, 0.85},
		{"pending", []diskSpec{{free: 900 * gib}, {worker: 1, free: 900 * gib, pending: 200 * mib * 64}}, 100, 0.99},
		{"fuller disk", []diskSpec{{free: 900 * gib}, {worker: 1, free: 100 * gib}}, 1000, 0.6},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, disks := build(t, "load-aware", Options{PartitionBytes: 64 * mib}, tc.specs)
			out, err := place(t, p, &Request{}, tc.n)
			if err != nil {
				t.Fatal(err)
			}
			c := counts(out)
			share := float64(c[disks[0]]) / float64(tc.n)
			if share < tc.idleShare || c[disks[1]] == 0 && tc.name != "pending" {
				t.Fatalf("idle disk share %.2f (counts %d/%d), want ≥ %.2f and some on the other", share, c[disks[0]], c[disks[1]], tc.idleShare)
			}
		})
	}
}

// TestOwnersSpread: ReducePartition owners of one dataset spread evenly
// over workers however many disks each has, with both strategies.
func TestOwnersSpread(t *testing.T) {
	for _, strategy := range builtin {
		for _, tc := range []struct {
			name  string
			specs []diskSpec
			total int
		}{
			{"uneven disks", append(uniform(1, 12, api.DiskType_HDD, 1000*gib), diskSpec{worker: 1, free: 1000 * gib}, diskSpec{worker: 2, free: 1000 * gib}), 300},
			{"many workers", uniform(7, 2, api.DiskType_HDD, 1000*gib), 1000},
			{"fewer subpartitions than workers", uniform(7, 2, api.DiskType_HDD, 1000*gib), 3},
		} {
			t.Run(strategy+"/"+tc.name, func(t *testing.T) {
				p, _ := build(t, strategy, Options{PartitionBytes: mib}, tc.specs)
				var owned []uint32
				// In two calls, like a dataset allocating half its owners
				// and then the rest.
				first := tc.total / 2
				for _, n := range []int{first, tc.total - first} {
					out := make([]*Disk, n)
					if err := p.PlaceOwners(&Request{}, tc.total, &owned, out); err != nil {
						t.Fatal(err)
					}
				}
				workers := 0
				for _, sp := range tc.specs {
					workers = max(workers, sp.worker+1)
				}
				limit := uint32((tc.total + workers - 1) / workers)
				var sum uint32
				lo, hi := ^uint32(0), uint32(0)
				for w := 0; w < workers; w++ {
					n := uint32(0)
					if w < len(owned) {
						n = owned[w]
					}
					if n > limit {
						t.Fatalf("worker %d owns %d of %d subpartitions, more than its share %d: %v", w, n, tc.total, limit, owned)
					}
					lo, hi = min(lo, n), max(hi, n)
					sum += n
				}
				if hi-lo > 1 {
					t.Fatalf("owner counts range %d..%d: %v", lo, hi, owned)
				}
				if int(sum) != tc.total {
					t.Fatalf("owned %d in total, want %d", sum, tc.total)
				}
			})
		}
	}
}

// TestNoDiskMessage: a failed placement says why, naming every reason.
func TestNoDiskMessage(t *testing.T) {
	for _, tc := range []struct {
		name  string
		specs []diskSpec
		want  []string
	}{
		{"no workers", nil, []string{"no worker has registered any disk"}},
		{"all reasons", []diskSpec{
			{worker: 0, free: 100 * gib, down: true},
			{worker: 1, free: 100 * gib, sick: "EIO on write check"},
			{worker: 2, free: 3 * gib},
		}, []string{"on lost workers: w0/d0", "unhealthy: w1/d1 (EIO on write check)", "below the reserve of 5.0 GiB plus the partition: w2/d2 (3.0 GiB available)", "preferred SSD"}},
	} {
		for _, strategy := range builtin {
			t.Run(strategy+"/"+tc.name, func(t *testing.T) {
				p, _ := build(t, strategy, Options{ReserveBytes: 5 * gib, PartitionBytes: 64 * mib}, tc.specs)
				_, err := place(t, p, &Request{Preferred: api.DiskType_SSD}, 2)
				var nd *ErrNoDisk
				if !errors.As(err, &nd) {
					t.Fatalf("err = %v, want *ErrNoDisk", err)
				}
				for _, w := range tc.want {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("message %q lacks %q", err, w)
					}
				}
			})
		}
	}
}

// TestRemove: a removed disk is never chosen again.
func TestRemove(t *testing.T) {
	for _, strategy := range builtin {
		t.Run(strategy, func(t *testing.T) {
			p, disks := build(t, strategy, Options{PartitionBytes: mib}, uniform(3, 1, api.DiskType_SSD, 100*gib))
			p.Remove(disks[1])
			out, err := place(t, p, &Request{}, 30)
			if err != nil {
				t.Fatal(err)
			}
			if counts(out)[disks[1]] != 0 {
				t.Fatal("removed disk chosen")
			}
		})
	}
}

func TestFormatBytes(t *testing.T) {
	for n, want := range map[uint64]string{0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 5 * gib: "5.0 GiB", 1536 * mib: "1.5 GiB"} {
		if got := FormatBytes(n); got != want {
			t.Errorf("FormatBytes(%d) = %q, want %q", n, got, want)
		}
	}
}

var builtin = []string{"load-aware", "round-robin"}

// TestRegister: a strategy plugged in by name is used, and must respect
// the qualification rules the Placer explains.
func TestRegister(t *testing.T) {
	Register("first-fit", func(o Options) Strategy { return &firstFit{opts: o} })
	if got := Strategies(); strings.Join(got, ",") != "first-fit,load-aware,round-robin" {
		t.Fatalf("strategies %v", got)
	}
	p, disks := build(t, "first-fit", Options{PartitionBytes: mib}, uniform(2, 1, api.DiskType_HDD, 100*gib))
	out, err := place(t, p, &Request{}, 3)
	if err != nil || counts(out)[disks[0]] != 3 {
		t.Fatalf("%v %v", counts(out), err)
	}
}

// firstFit always takes the first qualifying disk it knows.
type firstFit struct {
	opts  Options
	disks []*Disk
}

func (f *firstFit) Name() string { return "first-fit" }
func (f *firstFit) Update(d *Disk) {
	for _, x := range f.disks {
		if x == d {
			return
		}
	}
	f.disks = append(f.disks, d)
}
func (f *firstFit) Remove(*Disk) {}
func (f *firstFit) Place(req *Request, out []*Disk, reserve func(*Disk)) int {
	n := 0
	for n < len(out) {
		var chosen *Disk
		for _, d := range f.disks {
			if f.opts.Fits(req, d) {
				chosen = d
				break
			}
		}
		if chosen == nil {
			break
		}
		out[n] = chosen
		reserve(chosen)
		n++
	}
	return n
}

func TestUnknownStrategy(t *testing.T) {
	if _, err := NewStrategy("random", Options{}); err == nil || !strings.Contains(err.Error(), "load-aware") {
		t.Fatalf("err = %v", err)
	}
}
