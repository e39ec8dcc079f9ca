package scheduler

import (
	"context"
	"fmt"
	"testing"
)

// TestReadAheadServesLaterConsumers: consumers of one region arrive one
// after the other, each reading the extent right after the last one's (as
// a stage's consumers run a few at a time in subpartition order). Without
// read-ahead every consumer costs a read; with it the disk reads each slot
// once and the rest comes from the cache.
func TestReadAheadServesLaterConsumers(t *testing.T) {
	const (
		slot      = 64 << 10
		consumers = 64
		extent    = 6000
		size      = consumers * extent
	)
	for _, ra := range []bool{false, true} {
		t.Run(fmt.Sprintf("readahead=%t", ra), func(t *testing.T) {
			e := newEnv(t, envConfig{bufferBytes: slot, buffers: 64})
			f := e.file(size)
			cfg := Config{Trace: true}
			if !ra {
				cfg.CacheBytes = -1
			}
			s := e.sched(cfg)
			for c := range consumers {
				x := []Extent{{File: f, Offset: int64(c) * extent, Length: extent}}
				r, err := s.Register(ReaderConfig{Extents: x})
				if err != nil {
					t.Fatal(err)
				}
				if _, err := e.drain(context.Background(), r, x, extent); err != nil {
					t.Fatal(err)
				}
			}
			st := s.Stats()
			t.Logf("%d reads, %d bytes read for %d, %d hits, %d misses, %d joins", st.Reads, st.ReadBytes, size, st.CacheHits, st.CacheMisses, st.InflightJoins)
			if !ra {
				if st.Reads != consumers {
					t.Errorf("%d reads for %d consumers", st.Reads, consumers)
				}
				return
			}
			slots := int64((size + slot - 1) / slot)
			if st.Reads > slots || st.ReadBytes > slots*slot {
				t.Errorf("%d reads of %d bytes: want each of the %d slots read once", st.Reads, st.ReadBytes, slots)
			}
			if st.CacheHits < consumers-slots {
				t.Errorf("%d cache hits", st.CacheHits)
			}
		})
	}
}
