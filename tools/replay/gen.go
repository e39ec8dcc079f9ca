package replay

import (
	"fmt"
	"math/rand/v2"
)

// Shapes are the traces Generate makes (testdata/traces holds one of each).
var Shapes = []string{"terasort", "tpcds", "tiny"}

// Generate makes a trace of a named shape, the same for the same seed:
//
//   - terasort: one job, one MapPartitions dataset, 16 producers × 32
//     subpartitions of about 64 KiB each (±10 %), everything arriving at
//     once, one consumer per subpartition;
//   - tpcds: three jobs of two stages each, MapPartitions and
//     ReducePartitions, subpartition sizes drawn from a Zipf law (a few
//     huge, most small), producers arriving over 2 s and consumers over
//     3 s, some consumers reading ranges;
//   - tiny: many tiny partitions: four datasets of 100–200 producers × 64
//     subpartitions of 0–2 KiB (a third empty).
func Generate(shape string, seed uint64) (*Trace, error) {
	rng := rand.New(rand.NewPCG(seed, 0x5eed))
	t := &Trace{Name: shape}
	jitter := func(mean int64, frac float64) int64 {
		return mean + int64((rng.Float64()*2-1)*frac*float64(mean))
	}
	switch shape {
	case "terasort":
		t.Description = "TeraSort: 16 producers x 32 subpartitions of ~64 KiB, uniform, all at once"
		d := &Dataset{Job: "terasort", ID: "sort", Kind: "map", Subpartitions: 32}
		for p := range 16 {
			pr := Producer{Index: uint32(p), Bytes: make([]int64, d.Subpartitions)}
			for s := range pr.Bytes {
				pr.Bytes[s] = jitter(64<<10, 0.1)
			}
			d.Producers = append(d.Producers, pr)
		}
		for s := range d.Subpartitions {
			d.Consumers = append(d.Consumers, Consumer{Start: s, End: s + 1})
		}
		t.Datasets = []*Dataset{d}
	case "tpcds":
		t.Description = "TPC-DS-like: 3 jobs x 2 stages, Zipf subpartition sizes, arrivals spread over seconds"
		for j := range 3 {
			for stage, kind := range []string{"map", "reduce"} {
				subs := uint32(24 + 8*j)
				d := &Dataset{Job: fmt.Sprintf("query-%d", j+1), ID: fmt.Sprintf("q%d-stage%d", j+1, stage+1), Kind: kind, Subpartitions: subs}
				zipf := rand.NewZipf(rng, 1.3, 1, uint64(subs-1))
				// A fixed skew per dataset: each subpartition's weight is
				// 1 plus its share of 4×subs draws of a Zipf law.
				weight := make([]float64, subs)
				for s := range weight {
					weight[s] = 1
				}
				for range 4 * subs {
					weight[zipf.Uint64()] += 1
				}
				base := int64(8 << 10)
				start := int64(j*700 + stage*900)
				for p := range 8 + 4*j {
					pr := Producer{Index: uint32(p), StartMs: start + rng.Int64N(1000), Bytes: make([]int64, subs)}
					for s := range pr.Bytes {
						pr.Bytes[s] = jitter(int64(float64(base)*weight[s]), 0.3)
					}
					d.Producers = append(d.Producers, pr)
				}
				for s := uint32(0); s < subs; {
					n := uint32(1 + rng.IntN(3))
					if weight[s] > 4 || s+n > subs {
						n = 1 // a heavy subpartition gets a consumer of its own
					}
					d.Consumers = append(d.Consumers, Consumer{Start: s, End: s + n, StartMs: start + 1000 + rng.Int64N(3000)})
					s += n
				}
				t.Datasets = append(t.Datasets, d)
			}
		}
	case "tiny":
		t.Description = "many tiny partitions: 4 datasets of 100-200 producers x 64 subpartitions of 0-2 KiB"
		for i := range 4 {
			kind := "map"
			if i%2 == 1 {
				kind = "reduce"
			}
			d := &Dataset{Job: "tiny", ID: fmt.Sprintf("tiny-%d", i+1), Kind: kind, Subpartitions: 64}
			for p := range 100 + 33*i {
				pr := Producer{Index: uint32(p), StartMs: rng.Int64N(500), Bytes: make([]int64, d.Subpartitions)}
				for s := range pr.Bytes {
					if rng.IntN(3) > 0 {
						pr.Bytes[s] = rng.Int64N(2 << 10)
					}
				}
				d.Producers = append(d.Producers, pr)
			}
			for s := range d.Subpartitions {
				d.Consumers = append(d.Consumers, Consumer{Start: s, End: s + 1, StartMs: 500})
			}
			t.Datasets = append(t.Datasets, d)
		}
	default:
		return nil, fmt.Errorf("replay: unknown shape %q (known: %v)", shape, Shapes)
	}
	return t, nil
}
