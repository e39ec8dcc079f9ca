package engine

import (
	"slices"
	"time"
)

// When a writer finds its disk's share of the pool exhausted, it asks the
// disk's flusher for memory and waits for a buffer. The flusher writes out
// the largest partially filled buffers first (ReducePartition merge buffers
// mostly: a worker with a thousand open ReducePartitions cannot give each
// a whole buffer) and takes back spare buffers, until enough is on its way
// back to the pool. Streams in the middle of a reservation are skipped; a
// flushed stream continues later from its tail block. Nothing is allocated
// beyond the pool.

func (d *Disk) addStream(s *stream) {
	d.streamsMu.Lock()
	d.streams[s] = struct{}{}
	d.streamsMu.Unlock()
}

func (d *Disk) removeStream(s *stream) {
	d.streamsMu.Lock()
	delete(d.streams, s)
	d.streamsMu.Unlock()
}

// signalPressure wakes the flusher.
func (d *Disk) signalPressure() {
	select {
	case d.pressure <- struct{}{}:
	default:
	}
}

// flusher runs until the disk closes.
func (d *Disk) flusher() {
	defer d.wg.Done()
	var scratch []*stream
	for {
		select {
		case <-d.closing:
			return
		case <-d.pressure:
		}
		// Keep relieving while writers still wait; a pass that freed
		// nothing waits for the next signal (the writes in flight will
		// return their buffers).
		for {
			freed := 0
			scratch, freed = d.relievePass(scratch)
			if freed == 0 || d.store.pool.Stats().Waiters == 0 {
				break
			}
			select {
			case <-d.closing:
				return
			case <-time.After(time.Millisecond):
			}
		}
	}
}

// relievePass flushes the largest buffers of the disk's streams until about
// an eighth of the share is on its way back, and reports how many streams it
// relieved.
func (d *Disk) relievePass(scratch []*stream) ([]*stream, int) {
	d.streamsMu.Lock()
	scratch = scratch[:0]
	for s := range d.streams {
		scratch = append(scratch, s)
	}
	d.streamsMu.Unlock()
	slices.SortFunc(scratch, func(a, b *stream) int {
		ha, hb := a.held.Load(), b.held.Load()
		switch {
		case ha > hb:
			return -1
		case ha < hb:
			return 1
		}
		return 0
	})
	goal := max(1, d.share.Limit()/8)
	freed := 0
	for _, s := range scratch {
		if freed >= goal {
			break
		}
		if !s.mu.TryLock() {
			continue
		}
		if s.relieve() {
			freed++
		}
		s.mu.Unlock()
	}
	clear(scratch)
	return scratch, freed
}
