package engine

import "sync"

// creator creates the disk's new ReducePartition files in the background,
// one at a time, in the order asked. A thousand partitions opened together
// would otherwise hold their producers for the whole creation: ext4 creates
// one file of a directory at a time (the others spin on the directory's
// lock, burning the CPU the pushes need) and, without a journal, scans past
// every recently deleted inode of the group for each new one. Meanwhile the
// partitions buffer their pushes (their header first): a stream waits for
// its file only to write. A producer commit need not wait for the file: its
// record carries what recovery needs to recreate the partition (FORMAT.md,
// "Open files after a crash").
type creator struct {
	d      *Disk
	mu     sync.Mutex
	cond   sync.Cond
	queue  []fileCreation
	closed bool
	done   chan struct{}
}

// fileCreation is one file of a dataset to create for a stream.
type fileCreation struct {
	rel string
	ds  datasetKey
	s   *stream
}

func newCreator(d *Disk) *creator {
	c := &creator{d: d, done: make(chan struct{})}
	c.cond.L = &c.mu
	return c
}

// add queues the creation of rel for s, whose fileReady is closed when it
// is done; after stop, it fails s with ErrClosed at once.
func (c *creator) add(rel string, ds datasetKey, s *stream) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		s.setErr(ErrClosed)
		close(s.fileReady)
		return
	}
	c.queue = append(c.queue, fileCreation{rel, ds, s})
	c.cond.Signal()
}

// run creates the queued files until stop, and then those still queued.
func (c *creator) run() {
	defer close(c.done)
	var batch []fileCreation
	for {
		c.mu.Lock()
		for len(c.queue) == 0 && !c.closed {
			c.cond.Wait()
		}
		batch, c.queue = c.queue, batch[:0]
		closed := c.closed
		c.mu.Unlock()
		for i, fc := range batch {
			c.create(fc)
			batch[i] = fileCreation{}
		}
		if closed && len(batch) == 0 {
			return
		}
	}
}

// create makes fc's file, or fails its stream: the partition fails with the
// error at its next push, commit or finalize.
func (c *creator) create(fc fileCreation) {
	defer close(fc.s.fileReady)
	if fc.s.failed() != nil {
		return // failed before its file existed
	}
	f, err := c.d.createFile(fc.rel, fc.ds)
	if err != nil {
		c.d.noteFault(err) // only IO errors change the disk's state
		fc.s.setErr(err)
		return
	}
	fc.s.f = f
}

// stop makes run return once the queue is empty, and waits for it.
func (c *creator) stop() {
	c.mu.Lock()
	c.closed = true
	c.cond.Broadcast()
	c.mu.Unlock()
	<-c.done
}
