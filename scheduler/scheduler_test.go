package scheduler

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/sluice-shuffle/sluice/engine/diskio"
)

// randomExtents cuts files into ranges and deals them to readers: each
// reader gets a few ranges, in file order per file, some adjacent to other
// readers' (as the consumers of one region are), some not.
func randomExtents(rng *rand.Rand, e *env, files []int64, readers int) [][]Extent {
	out := make([][]Extent, readers)
	for fi, size := range files {
		f := e.file(size)
		_ = fi
		for off := int64(0); off < size; {
			n := min(int64(1+rng.IntN(40<<10)), size-off)
			r := rng.IntN(readers)
			if rng.IntN(4) > 0 {
				out[r] = append(out[r], Extent{File: f, Offset: off, Length: n})
			}
			off += n
		}
	}
	return out
}

func TestReadsEverything(t *testing.T) {
	for _, backend := range []string{diskio.BackendPool, diskio.BackendURing, diskio.BackendBuffered} {
		for _, pol := range []Policy{Elevator, FIFO} {
			for _, ra := range []int64{-1, 0} {
				if pol == FIFO && ra == 0 {
					continue
				}
				name := fmt.Sprintf("%s/%v/readahead=%t", backend, pol, ra == 0)
				t.Run(name, func(t *testing.T) {
					e := newEnv(t, envConfig{backend: backend, bufferBytes: 64 << 10, buffers: 64})
					s := e.sched(Config{Policy: pol, CacheBytes: ra, MaxReadBytes: 256 << 10, Trace: true})
					rng := rand.New(rand.NewPCG(1, uint64(len(name))))
					exts := randomExtents(rng, e, []int64{3<<20 + 123, 1 << 20, 777 << 10}, 40)
					var wg sync.WaitGroup
					errs := make(chan error, len(exts))
					for i, x := range exts {
						r, err := s.Register(ReaderConfig{Job: fmt.Sprint("job", i%3), Extents: x})
						if err != nil {
							t.Fatal(err)
						}
						grant := int64(1 + rng.IntN(200<<10))
						wg.Add(1)
						go func() {
							defer wg.Done()
							if _, err := e.drain(context.Background(), r, x, grant); err != nil {
								errs <- fmt.Errorf("reader %d: %w", i, err)
							}
						}()
					}
					wg.Wait()
					close(errs)
					for err := range errs {
						t.Error(err)
					}
					st := s.Stats()
					if st.Readers != 0 || st.Pending != 0 {
						t.Errorf("after all readers ended: %+v", st)
					}
					for _, r := range s.Trace() {
						if r.Length > 256<<10 && !(ra == 0 && r.Length <= 256<<10+64<<10) {
							t.Errorf("read of %d bytes exceeds the maximum", r.Length)
						}
						if pol == FIFO && r.Pieces != 1 {
							t.Errorf("FIFO read served %d pieces", r.Pieces)
						}
					}
					t.Logf("%+v", st)
				})
			}
		}
	}
}
