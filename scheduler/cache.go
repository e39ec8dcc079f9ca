package scheduler

import (
	"errors"
	"fmt"
	"io"
	"sync/atomic"

	"github.com/dgraph-io/ristretto/v2"
)

// The read-ahead cache holds read buffers, keyed by (file, slot): slots are
// the file ranges [k*B, (k+1)*B) where B is the pool's buffer size, and in
// read-ahead mode every buffer of a read lies in one slot (a read's first
// buffer ends at its slot's end), so a later reader finds the bytes of its
// extent with one lookup per slot. An entry holds a reference on its pool
// buffer, which the buffer's share counts like any other; eviction drops
// the reference and the buffer returns to the pool as soon as no chunk
// still uses it. The capacity is a number of whole buffers, so it bounds
// the pool memory the cache pins exactly.
//
// It is a map and a ring, guarded by Scheduler.mu, not a ristretto cache
// (which DESIGN.md names for it): read-ahead is wanted by the consumers
// that come next, so the cache must evict first in, first out, where
// ristretto's TinyLFU would keep the slots that served many consumers (and
// are done) and refuse the new ones; and ristretto allocates on every Set,
// Del and Wait, three allocations per read-ahead buffer on the server's
// read path, which must allocate nothing per buffer. The index cache, whose
// entries are small heap copies read again and again, stays on ristretto.

// slotEntry is a cached buffer: the buffer and the generation it was filled
// in, and what it holds: file bytes [from, from+n), inside slot.
type slotEntry struct {
	rb   *readBuf
	gen  uint32
	file uint64 // FileKey hash, checked against the key on a hit
	slot int64
	from int64
	n    int
}

type slotCache struct {
	m map[uint64]slotEntry
	// ring holds the entries put, oldest first, as many as the cache holds:
	// putting into a full ring evicts the oldest entry first. An entry
	// replaced by a later put of its slot stays in the ring until its turn,
	// and is then skipped.
	ring    []slotEntry
	head, n int
}

func newSlotCache(maxBytes int64, slotBytes int) *slotCache {
	entries := max(maxBytes/int64(slotBytes), 1)
	return &slotCache{m: make(map[uint64]slotEntry, entries), ring: make([]slotEntry, entries)}
}

func slotKey(file uint64, slot int64) uint64 {
	// splitmix64 finalizer over both halves: neighbouring slots of one file
	// spread over the whole key space.
	x := file ^ uint64(slot)*0x9e3779b97f4a7c15
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	return x ^ x>>31
}

// peek returns the cached slot without taking a reference.
func (c *slotCache) peek(file uint64, slot int64) (slotEntry, bool) {
	e, ok := c.m[slotKey(file, slot)]
	if !ok || e.file != file || e.slot != slot {
		return slotEntry{}, false
	}
	return e, true
}

// get returns the cached slot with a reference taken on its buffer, or false.
func (c *slotCache) get(file uint64, slot int64) (slotEntry, bool) {
	e, ok := c.peek(file, slot)
	if !ok || !e.rb.acquire(e.gen) {
		return slotEntry{}, false
	}
	return e, true
}

// put caches a filled buffer, evicting the oldest entry first when the
// cache is full; it reports whether it evicted one, and whether that entry
// was never used. The cache takes its own reference; the caller keeps its
// own.
func (c *slotCache) put(e slotEntry) (popped, wasted bool) {
	if c.n == len(c.ring) {
		old := c.pop()
		if c.drop(old) {
			popped, wasted = true, !old.rb.used.Load()
		}
	}
	e.rb.ref()
	k := slotKey(e.file, e.slot)
	if prev, ok := c.m[k]; ok {
		prev.rb.release() // replaced; its ring place is skipped later
	}
	c.m[k] = e
	c.ring[(c.head+c.n)%len(c.ring)] = e
	c.n++
	return popped, wasted
}

// drop removes e from the map and releases the cache's reference, unless a
// later put replaced it; it reports whether it did.
func (c *slotCache) drop(e slotEntry) bool {
	k := slotKey(e.file, e.slot)
	if cur, ok := c.m[k]; !ok || cur.rb != e.rb || cur.gen != e.gen {
		return false
	}
	delete(c.m, k)
	e.rb.release()
	return true
}

// pop takes the oldest entry off the ring.
func (c *slotCache) pop() slotEntry {
	e := c.ring[c.head]
	c.ring[c.head] = slotEntry{}
	c.head = (c.head + 1) % len(c.ring)
	c.n--
	return e
}

// shed evicts the oldest entries, at most n, so that live reads get the
// buffers read-ahead holds (a buffer returns to the pool once no chunk uses
// it either). It reports how many ring places it freed.
func (c *slotCache) shed(n int) int {
	done := 0
	for ; done < n && c.n > 0; done++ {
		c.drop(c.pop())
	}
	return done
}

// close releases every entry.
func (c *slotCache) close() {
	for c.n > 0 {
		c.drop(c.pop())
	}
	clear(c.m)
}

// IndexCache is a cost-bounded cache of index blocks (and any other small,
// immutable metadata reads), keyed by (file, offset, length). Its entries
// are heap copies, accounted exactly against its own byte budget rather
// than the buffer pool: an index block is at most 4 KiB, and pinning a pool
// buffer for each would waste most of it. The engine's partition readers use
// it through ReaderAt, which layout's index lookups accept as the
// io.ReaderAt they read index blocks from.
type IndexCache struct {
	c      *ristretto.Cache[uint64, indexEntry]
	hits   atomic.Int64
	misses atomic.Int64
}

type indexEntry struct {
	file uint64
	off  int64
	b    []byte
}

// IndexCacheStats counts lookups of index blocks.
type IndexCacheStats struct {
	Hits, Misses int64
}

// NewIndexCache returns a cache of at most maxBytes of cached bytes.
func NewIndexCache(maxBytes int64) (*IndexCache, error) {
	if maxBytes <= 0 {
		return nil, errors.New("scheduler: index cache needs a positive size")
	}
	c, err := ristretto.NewCache(&ristretto.Config[uint64, indexEntry]{
		NumCounters:        max(maxBytes/100, 1024), // ~10 counters per 1 KiB entry
		MaxCost:            maxBytes,
		BufferItems:        64,
		IgnoreInternalCost: true,
	})
	if err != nil {
		return nil, fmt.Errorf("scheduler: index cache: %w", err)
	}
	return &IndexCache{c: c}, nil
}

func indexKey(file uint64, off int64, n int) uint64 {
	return slotKey(file^uint64(n)<<48, off)
}

// Get copies the cached bytes of (file, off, len(p)) into p.
func (ic *IndexCache) Get(file FileKey, off int64, p []byte) bool {
	h := file.hash()
	e, ok := ic.c.Get(indexKey(h, off, len(p)))
	if !ok || e.file != h || e.off != off || len(e.b) != len(p) {
		ic.misses.Add(1)
		return false
	}
	copy(p, e.b)
	ic.hits.Add(1)
	return true
}

// Set caches a copy of b as the bytes of file at off. It returns once the
// entry is visible (ristretto admits entries asynchronously; the lookups
// right after a miss are the ones that matter: the next consumers of the
// same partition read the same index block).
func (ic *IndexCache) Set(file FileKey, off int64, b []byte) {
	h := file.hash()
	if ic.c.Set(indexKey(h, off, len(b)), indexEntry{file: h, off: off, b: append([]byte(nil), b...)}, int64(len(b))) {
		ic.c.Wait()
	}
}

// Stats returns the hit and miss counts.
func (ic *IndexCache) Stats() IndexCacheStats {
	return IndexCacheStats{Hits: ic.hits.Load(), Misses: ic.misses.Load()}
}

// Close drops every entry.
func (ic *IndexCache) Close() { ic.c.Close() }

// indexReadMax is the largest read ReaderAt caches: an index block
// (layout.IndexBlockSizeMax) or a footer, not bulk data.
const indexReadMax = 4096

// ReaderAt wraps r, the reader of the file whose key is file, so that reads
// of at most 4 KiB are served from the cache and cached on a miss; larger
// reads pass through.
func (ic *IndexCache) ReaderAt(file FileKey, r io.ReaderAt) io.ReaderAt {
	return &cachedReaderAt{ic: ic, file: file, r: r}
}

type cachedReaderAt struct {
	ic   *IndexCache
	file FileKey
	r    io.ReaderAt
}

func (c *cachedReaderAt) ReadAt(p []byte, off int64) (int, error) {
	if len(p) > indexReadMax {
		return c.r.ReadAt(p, off)
	}
	if c.ic.Get(c.file, off, p) {
		return len(p), nil
	}
	n, err := c.r.ReadAt(p, off)
	if n == len(p) {
		c.ic.Set(c.file, off, p)
	}
	return n, err
}
