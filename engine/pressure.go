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

// flusher runs until the disk closes. Each signal comes from a writer
// about to wait for a buffer; the flusher writes out as many of the largest
// partial buffers as writers wait (their buffers come back when the writes
// complete, and go to the waiters in FIFO order).
func (d *Disk) flusher() {
	defer d.wg.Done()
	var scratch []*stream
	// While writers wait, look again now and then: a stream that was busy
	// during a pass may have gone idle with a partial buffer since.
	retry := time.NewTimer(time.Hour)
	defer retry.Stop()
	for {
		select {
		case <-d.closing:
			return
		case <-d.pressure:
		case <-retry.C:
		}
		if need := int(d.waiters.Load()); need > 0 {
			scratch = d.relievePass(scratch, need)
			retry.Reset(10 * time.Millisecond)
		}
	}
}

// relievePass flushes the largest buffers of up to need streams.
func (d *Disk) relievePass(scratch []*stream, need int) []*stream {
	d.streamsMu.Lock()
	scratch = scratch[:0]
	for s := range d.streams {
		if s.held.Load() > 0 || s.spareCount.Load() > 0 {
			scratch = append(scratch, s)
		}
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
	freed := 0
	for _, s := range scratch {
		if freed >= need {
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
	return scratch
}
