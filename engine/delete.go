package engine

import (
	"context"
	"errors"
	"os"
	"sort"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// deleter removes the directory trees of released datasets and jobs of one
// disk, one file at a time at a bounded rate (files per second and bytes
// per second, token buckets), so that a release of a job with a million
// files does not starve the disk's foreground IO. The release is durable
// before (its commit-log record): a crash halfway leaves files that no
// record names, which recovery removes.
type deleter struct {
	d     *Disk
	files bucket
	bytes bucket

	mu      sync.Mutex
	cond    sync.Cond
	queue   []deletion
	busy    bool
	stopped bool
	done    chan struct{}
}

type deletion struct {
	rel string // directory relative to the disk
	key datasetKey
}

// bucket is a token bucket of rate tokens per second holding at most one
// second's worth.
type bucket struct {
	rate   float64
	tokens float64
	last   time.Time
}

// take waits until n tokens are available and takes them. A request larger
// than the bucket waits for its whole cost (a 10 GiB file at 1 GiB/s waits
// ten seconds after it is deleted).
func (b *bucket) take(n float64, stop <-chan struct{}) bool {
	now := time.Now()
	if b.last.IsZero() {
		b.last, b.tokens = now, b.rate
	}
	b.tokens = min(b.rate, b.tokens+now.Sub(b.last).Seconds()*b.rate)
	b.last = now
	b.tokens -= n
	if b.tokens >= 0 {
		return true
	}
	wait := time.Duration(-b.tokens / b.rate * float64(time.Second))
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-stop:
		return false
	}
}

func newDeleter(d *Disk) *deleter {
	dl := &deleter{d: d, files: bucket{rate: d.cfg.DeleteFilesPerSecond}, bytes: bucket{rate: d.cfg.DeleteBytesPerSecond},
		done: make(chan struct{})}
	dl.cond.L = &dl.mu
	return dl
}

func (dl *deleter) enqueue(rel string, key datasetKey) {
	dl.mu.Lock()
	dl.queue = append(dl.queue, deletion{rel: rel, key: key})
	dl.cond.Broadcast()
	dl.mu.Unlock()
}

func (dl *deleter) run() {
	defer dl.d.bg.Done()
	defer close(dl.done)
	for {
		dl.mu.Lock()
		for len(dl.queue) == 0 && !dl.stopped {
			dl.busy = false
			dl.cond.Broadcast()
			dl.cond.Wait()
		}
		if dl.stopped {
			dl.mu.Unlock()
			return
		}
		job := dl.queue[0]
		dl.queue = dl.queue[1:]
		dl.busy = true
		dl.mu.Unlock()

		if err := dl.removeTree(job.rel); err != nil {
			dl.d.log.Warn("engine: deleting a released tree", "dir", job.rel, "err", err)
		}
		d := dl.d
		d.mu.Lock()
		delete(d.released, job.key)
		d.mu.Unlock()
	}
}

// removeTree removes rel and everything under it, files first.
func (dl *deleter) removeTree(rel string) error {
	d := dl.d
	path := d.abs(rel)
	entries, err := os.ReadDir(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	sort.Slice(entries, func(i, j int) bool { return entries[i].Name() < entries[j].Name() })
	for _, e := range entries {
		if e.IsDir() {
			if err := dl.removeTree(rel + "/" + e.Name()); err != nil {
				return err
			}
			continue
		}
		var size int64
		if info, err := e.Info(); err == nil {
			size = info.Size()
		}
		if !dl.files.take(1, d.closing) || !dl.bytes.take(float64(size), d.closing) {
			return errors.New("engine: disk closing")
		}
		if err := unix.Unlink(path + "/" + e.Name()); err != nil && !errors.Is(err, unix.ENOENT) {
			return err
		}
		d.stats.deletedFiles.Add(1)
		d.stats.deletedBytes.Add(size)
	}
	if err := unix.Rmdir(path); err != nil && !errors.Is(err, unix.ENOENT) {
		return err
	}
	return nil
}

// wait waits until the queue is empty and nothing is being deleted.
func (dl *deleter) wait(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() {
		dl.mu.Lock()
		dl.cond.Broadcast()
		dl.mu.Unlock()
	})
	defer stop()
	dl.mu.Lock()
	defer dl.mu.Unlock()
	for (len(dl.queue) > 0 || dl.busy) && !dl.stopped {
		if err := ctx.Err(); err != nil {
			return err
		}
		dl.cond.Wait()
	}
	return nil
}

func (dl *deleter) stop() {
	dl.mu.Lock()
	dl.stopped = true
	dl.cond.Broadcast()
	dl.mu.Unlock()
}
