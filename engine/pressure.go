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

// flusher runs until the disk closes. It has two jobs.
//
// Memory pressure: each pressure signal comes from a writer about to wait
// for a buffer; the flusher writes out the largest partial buffers, as many
// as writers wait beyond what the writes already queued will give back
// (buffers come back when writes complete, and go to the waiters in FIFO
// order).
//
// A disk with room for more writes: it writes out the fullest partial
// buffers (at least a quarter full, idleFlushFraction) early. Merge buffers
// of ReducePartitions fill in lockstep (every producer pushes to every
// partition in turn), so without this they all become full at about the
// same moment: a burst of writes while pushes wait for memory, then a disk
// with nothing to do while the buffers fill again. Writers do this
// themselves as their buffers pass the threshold (stream.noteFill); the
// flusher takes the buffers of writers that went quiet. An early write ends
// on a file system block and keeps the rest in memory (flushEarlyCur).
func (d *Disk) flusher() {
	defer d.bg.Done()
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
		case <-d.idle:
		case <-retry.C:
		}
		if waiters := int(d.waiters.Load()); waiters > 0 {
			// Writes already queued bring their buffers back when they
			// complete: flush early only what they cannot cover (a disk
			// that is the bottleneck gains nothing from more, smaller
			// writes).
			if need := waiters - d.writesQueued(); need > 0 {
				scratch = d.relievePass(scratch, need, 0)
			}
			retry.Reset(10 * time.Millisecond)
			continue
		}
		if room := d.ioRoom(); room > 0 {
			scratch = d.relievePass(scratch, room, int64(d.bufBytes/idleFlushFraction))
		}
	}
}

// idleFlushFraction: an idle disk writes out buffers at least this
// fraction full (a quarter of a 1 MiB buffer is still a large write).
const idleFlushFraction = 4

// writesQueued is how many writes are in the IO or waiting for it.
func (d *Disk) writesQueued() int { return int(d.writesWaiting.Load() + d.writesInIO.Load()) }

// ioRoom is how many more writes the disk could take now without any
// waiting in its queue (0 when it is busy enough).
func (d *Disk) ioRoom() int {
	queued := d.writesQueued()
	if queued >= d.ioMax/2 {
		return 0
	}
	return d.ioMax - queued
}

// noteIdle tells the flusher the disk may be running out of writes.
func (d *Disk) noteIdle() {
	if d.ioRoom() > 0 {
		select {
		case d.idle <- struct{}{}:
		default:
		}
	}
}

// relievePass flushes the largest buffers (of at least min bytes) of up to
// need streams.
func (d *Disk) relievePass(scratch []*stream, need int, min int64) []*stream {
	d.streamsMu.Lock()
	scratch = scratch[:0]
	for s := range d.streams {
		if s.held.Load() > max(min, 0) || (min == 0 && s.spareCount.Load() > 0) {
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
		if min > 0 {
			if s.flushEarly(min) {
				freed++
			}
		} else if s.relieve() {
			freed++
		}
		s.mu.Unlock()
	}
	clear(scratch)
	return scratch
}
