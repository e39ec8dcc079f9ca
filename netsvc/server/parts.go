package server

import (
	"container/list"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluice-shuffle/sluice/engine"
	"github.com/sluice-shuffle/sluice/scheduler"
)

// partCache shares open MapPartitions among the read channels that read
// them. Consumers of one dataset read every producer's partition at about
// the same time, and each open costs a few small direct reads (header,
// footer, directory) and a file descriptor: a thousand consumers of 64
// producers would otherwise open 64,000 files. One channel opens a
// partition; the channels that want it meanwhile wait for that open rather
// than each opening it too (10,000 channels opened at once on one
// partition opened it thousands of times, each with its header buffer:
// 200 MB of garbage while they opened). An entry stays open while a
// channel uses it and for idleKeep afterwards (at most idleMax such), so
// consumers that come one after the other find it too.
type partCache struct {
	store *engine.Store
	sched func(*engine.Disk) *scheduler.Scheduler
	log   *slog.Logger

	opens atomic.Int64 // successful engine opens (Stats.PartitionOpens)

	mu   sync.Mutex
	maps map[mapKey]*mapPart
	idle list.List // of *mapPart with refs == 0, oldest first
}

const (
	idleMax  = 512
	idleKeep = 10 * time.Second
)

type mapKey struct {
	job, dataset string
	index, att   uint32
}

type mapPart struct {
	key   mapKey
	refs  int
	idleE *list.Element
	since time.Time

	// ready is closed once the open is done: r is set, or err.
	ready chan struct{}
	err   error

	// mu guards r's index scratch: Extents is not safe for concurrent use.
	mu sync.Mutex
	r  *engine.MapReader
}

func (pc *partCache) init(store *engine.Store, sched func(*engine.Disk) *scheduler.Scheduler, log *slog.Logger) {
	pc.store, pc.sched, pc.log = store, sched, log
	pc.maps = map[mapKey]*mapPart{}
}

// openMap returns the open partition with a reference taken. When another
// channel is opening it, it waits for that open and shares its outcome.
func (pc *partCache) openMap(job, dataset string, index, attempt uint32) (*mapPart, error) {
	k := mapKey{job, dataset, index, attempt}
	pc.mu.Lock()
	pc.expireLocked(time.Now())
	if p := pc.maps[k]; p != nil {
		pc.refLocked(p)
		pc.mu.Unlock()
		<-p.ready
		if p.err != nil {
			return nil, p.err // the entry is gone: no reference to give back
		}
		return p, nil
	}
	p := &mapPart{key: k, refs: 1, ready: make(chan struct{})}
	pc.maps[k] = p
	pc.mu.Unlock()
	defer close(p.ready)
	r, err := pc.store.OpenMap(job, dataset, index, attempt)
	if err != nil {
		pc.mu.Lock()
		delete(pc.maps, k)
		pc.mu.Unlock()
		p.err = err
		return nil, err
	}
	if pc.sched != nil {
		if sc := pc.sched(r.Disk()); sc != nil && sc.IndexCache() != nil {
			if key, _, err := scheduler.KeyOf(r.File()); err == nil {
				r.UseIndexReader(sc.IndexCache().ReaderAt(key, r.ReaderAt()))
			}
		}
	}
	p.r = r
	pc.opens.Add(1)
	return p, nil
}

func (pc *partCache) refLocked(p *mapPart) {
	if p.refs == 0 && p.idleE != nil {
		pc.idle.Remove(p.idleE)
		p.idleE = nil
	}
	p.refs++
}

// release drops a reference; an unused partition stays open for a while.
func (pc *partCache) release(p *mapPart) {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	p.refs--
	if p.refs > 0 {
		return
	}
	p.since = time.Now()
	p.idleE = pc.idle.PushBack(p)
	for pc.idle.Len() > idleMax {
		pc.evictLocked(pc.idle.Front().Value.(*mapPart))
	}
}

func (pc *partCache) expireLocked(now time.Time) {
	for e := pc.idle.Front(); e != nil; e = pc.idle.Front() {
		p := e.Value.(*mapPart)
		if now.Sub(p.since) < idleKeep {
			return
		}
		pc.evictLocked(p)
	}
}

func (pc *partCache) evictLocked(p *mapPart) {
	pc.idle.Remove(p.idleE)
	p.idleE = nil
	delete(pc.maps, p.key)
	if err := p.r.Close(); err != nil && pc.log != nil {
		pc.log.Warn("server: closing a partition", "partition", p.r.Ref(), "err", err)
	}
}

// closeAll closes the idle partitions (at shutdown, after every channel
// ended).
func (pc *partCache) closeAll() {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	for e := pc.idle.Front(); e != nil; e = pc.idle.Front() {
		pc.evictLocked(e.Value.(*mapPart))
	}
}

// forget closes idle partitions of a released job or dataset (dataset ""
// for the whole job), so that their files' space is freed at once.
func (pc *partCache) forget(job, dataset string) {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	for e := pc.idle.Front(); e != nil; {
		next := e.Next()
		p := e.Value.(*mapPart)
		if p.key.job == job && (dataset == "" || p.key.dataset == dataset) {
			pc.evictLocked(p)
		}
		e = next
	}
}

// extents resolves a subpartition range of the partition.
func (p *mapPart) extents(start, end uint32, dst []engine.Extent) ([]engine.Extent, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.r.Extents(start, end, dst)
}
