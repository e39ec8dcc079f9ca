package placement

import (
	"container/heap"

	"github.com/sluice-shuffle/sluice/manager/api"
)

// Two type classes: SSD and everything else (HDD, unspecified).
const typeClasses = 2

// tiers returns the type classes to try, in order, for a preference: the
// preferred class alone first, then the rest; with no preference, all
// classes together.
func tiers(preferred api.DiskType) [][]int {
	if preferred == api.DiskType_DISK_TYPE_UNSPECIFIED {
		return [][]int{{0, 1}}
	}
	c := typeClass(preferred)
	return [][]int{{c}, {1 - c}}
}

// ---------------------------------------------------------------- load-aware

// minIdle bounds the idle fraction used in the cost so that a saturated disk
// still gets a (small) share instead of an infinite cost.
const minIdle = 0.05

type loadAware struct {
	opts  Options
	heaps [typeClasses]diskHeap
}

func newLoadAware(opts Options) *loadAware {
	if opts.PartitionBytes == 0 {
		opts.PartitionBytes = DefaultPartitionBytes
	}
	return &loadAware{opts: opts}
}

func (s *loadAware) Name() string { return "load-aware" }

// cost estimates how long a partition placed on d waits behind the work
// already queued there, relative to other disks: queued work in partitions
// (including this one), stretched by how busy the device is, and by how
// full it is (to spread data over disks of different sizes).
func (s *loadAware) cost(d *Disk) float64 {
	queued := float64(d.PendingBytes+d.ReservedBytes)/float64(s.opts.PartitionBytes) + 1
	idle := 1 - d.Utilization
	if idle < minIdle {
		idle = minIdle
	}
	fill := 0.0
	if d.CapacityBytes > 0 && d.FreeBytes <= d.CapacityBytes {
		fill = 1 - float64(d.FreeBytes)/float64(d.CapacityBytes)
	}
	return queued / idle * (1 + fill)
}

// inHeap: a disk is kept in its heap while it is usable and has room for at
// least one more partition above the reserve; the exact per-request check
// happens when it is popped.
func (s *loadAware) inHeap(d *Disk) bool {
	return d.Usable && d.AvailableBytes() >= s.opts.ReserveBytes
}

func (s *loadAware) Update(d *Disk) {
	d.cost = s.cost(d)
	h := &s.heaps[typeClass(d.Type)]
	want := s.inHeap(d)
	switch {
	case d.heapIndex >= 0 && (!want || d.heapIndex >= len(*h) || (*h)[d.heapIndex] != d):
		// Out of the heap, or in another class's heap (type changed).
		s.remove(d)
		if want {
			heap.Push(h, d)
		}
	case d.heapIndex >= 0:
		heap.Fix(h, d.heapIndex)
	case want:
		heap.Push(h, d)
	}
}

func (s *loadAware) remove(d *Disk) {
	for c := range s.heaps {
		h := &s.heaps[c]
		if d.heapIndex < len(*h) && (*h)[d.heapIndex] == d {
			heap.Remove(h, d.heapIndex)
			return
		}
	}
	d.heapIndex = -1
}

func (s *loadAware) Remove(d *Disk) {
	if d.heapIndex >= 0 {
		s.remove(d)
	}
}

func (s *loadAware) Place(req *Request, out []*Disk, reserve func(*Disk)) int {
	// Disks popped because they do not qualify for this request are set
	// aside and pushed back at the end, so that each is looked at once per
	// call rather than once per partition.
	var aside []*Disk
	defer func() {
		for _, d := range aside {
			s.Update(d)
		}
	}()
	filled := 0
	for _, tier := range tiers(req.Preferred) {
		for filled < len(out) {
			var best *Disk
			for _, c := range tier {
				h := &s.heaps[c]
				for h.Len() > 0 && !fits(&s.opts, req, (*h)[0]) {
					aside = append(aside, heap.Pop(h).(*Disk))
				}
				if h.Len() > 0 && (best == nil || (*h)[0].cost < best.cost) {
					best = (*h)[0]
				}
			}
			if best == nil {
				break
			}
			out[filled] = best
			filled++
			reserve(best) // updates best's cost and position
		}
	}
	return filled
}

// diskHeap is a min-heap of disks by cost; ties go to the disk with more
// available bytes, then by id, so that choices are deterministic.
type diskHeap []*Disk

func (h diskHeap) Len() int { return len(h) }
func (h diskHeap) Less(i, j int) bool {
	a, b := h[i], h[j]
	if a.cost != b.cost {
		return a.cost < b.cost
	}
	if aa, ba := a.AvailableBytes(), b.AvailableBytes(); aa != ba {
		return aa > ba
	}
	if a.WorkerID != b.WorkerID {
		return a.WorkerID < b.WorkerID
	}
	return a.ID < b.ID
}
func (h diskHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].heapIndex = i
	h[j].heapIndex = j
}
func (h *diskHeap) Push(x any) {
	d := x.(*Disk)
	d.heapIndex = len(*h)
	*h = append(*h, d)
}
func (h *diskHeap) Pop() any {
	old := *h
	d := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	d.heapIndex = -1
	return d
}

// --------------------------------------------------------------- round-robin

type roundRobin struct {
	opts   Options
	rings  [typeClasses][]*Disk
	cursor [typeClasses]int
	// turn alternates the classes of a tier with several (no preference).
	turn int
}

func newRoundRobin(opts Options) *roundRobin {
	if opts.PartitionBytes == 0 {
		opts.PartitionBytes = DefaultPartitionBytes
	}
	return &roundRobin{opts: opts}
}

func (s *roundRobin) Name() string { return "round-robin" }

func (s *roundRobin) Update(d *Disk) {
	c := typeClass(d.Type)
	if d.ringIndex >= 0 {
		if d.ringIndex < len(s.rings[c]) && s.rings[c][d.ringIndex] == d {
			return
		}
		s.Remove(d) // type changed
	}
	d.ringIndex = len(s.rings[c])
	s.rings[c] = append(s.rings[c], d)
}

func (s *roundRobin) Remove(d *Disk) {
	for c := range s.rings {
		r := s.rings[c]
		if d.ringIndex >= 0 && d.ringIndex < len(r) && r[d.ringIndex] == d {
			copy(r[d.ringIndex:], r[d.ringIndex+1:])
			r[len(r)-1] = nil
			s.rings[c] = r[:len(r)-1]
			for i := d.ringIndex; i < len(s.rings[c]); i++ {
				s.rings[c][i].ringIndex = i
			}
			if s.cursor[c] > d.ringIndex {
				s.cursor[c]--
			}
			break
		}
	}
	d.ringIndex = -1
}

func (s *roundRobin) Place(req *Request, out []*Disk, reserve func(*Disk)) int {
	filled := 0
	for _, tier := range tiers(req.Preferred) {
		for filled < len(out) {
			// Visit the classes of the tier in turn, one disk each.
			var chosen *Disk
			for i := range tier {
				c := tier[(s.turn+i)%len(tier)]
				if d := s.next(c, req); d != nil {
					chosen = d
					break
				}
			}
			s.turn++
			if chosen == nil {
				break
			}
			out[filled] = chosen
			filled++
			reserve(chosen)
		}
	}
	return filled
}

// next advances class c's cursor to the next qualifying disk.
func (s *roundRobin) next(c int, req *Request) *Disk {
	r := s.rings[c]
	for range r {
		if s.cursor[c] >= len(r) {
			s.cursor[c] = 0
		}
		d := r[s.cursor[c]]
		s.cursor[c]++
		if fits(&s.opts, req, d) {
			return d
		}
	}
	return nil
}
