package engine

import "sync"

// creator creates the disk's new ReducePartition files in the background,
// creatorWorkers at a time, in about the order asked. A thousand
// partitions opened together would otherwise hold their producers for the
// whole creation, which can take a millisecond of CPU a file (inodes.go).
// The files are made with O_TMPFILE and linked (diskio.CreateFile), so
// creations in one directory need not wait for each other's inode
// allocation. Meanwhile the partitions buffer their pushes (their header
// first): a stream waits for its file only to write. A producer commit need
// not wait for the file: its record carries what recovery needs to
// recreate the partition (FORMAT.md, "Open files after a crash").
type creator struct {
	d      *Disk
	mu     sync.Mutex
	cond   sync.Cond
	queue  []fileCreation
	head   int
	closed bool
	done   chan struct{}
}

// creatorWorkers is how many files a disk creates at once: the cores of
// the machines we measure on (two; more did not help there).
const creatorWorkers = 2

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
	var wg sync.WaitGroup
	for range creatorWorkers {
		wg.Go(c.work)
	}
	wg.Wait()
}

// work is one of run's workers.
func (c *creator) work() {
	for {
		c.mu.Lock()
		for c.head == len(c.queue) && !c.closed {
			c.cond.Wait()
		}
		if c.head == len(c.queue) {
			c.mu.Unlock()
			return // closed, and nothing left
		}
		fc := c.queue[c.head]
		c.queue[c.head] = fileCreation{}
		if c.head++; c.head > len(c.queue)/2 {
			// Reuse the taken half (it is empty when head reached the end).
			n := copy(c.queue, c.queue[c.head:])
			clear(c.queue[n:])
			c.queue, c.head = c.queue[:n], 0
		}
		c.mu.Unlock()
		c.create(fc)
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
