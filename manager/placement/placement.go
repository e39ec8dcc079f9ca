// Package placement chooses the disk that holds a new partition.
//
// The manager keeps one Disk per disk of every worker it knows and tells the
// Placer whenever a disk appears, changes figures or disappears. A Placer
// delegates the choice to a pluggable Strategy:
//
//   - "load-aware" (the default) picks the qualifying disk of lowest cost,
//     where the cost grows with the work queued on the disk (pending bytes
//     plus what was placed since the worker last reported, in units of the
//     expected partition size), shrinks with the disk's idle fraction (1 -
//     utilization, from /proc/diskstats) and grows with how full it is.
//     A binary heap per disk type makes each choice O(log disks).
//   - "round-robin" cycles over the qualifying disks of the preferred type.
//
// A disk qualifies when its worker is alive, it is healthy, and its
// available bytes (free - pending - reserved since the last report) stay
// above the reserve after adding the expected partition size. A dataset's
// preferred disk type is tried first; other types are used when none of
// the preferred type qualifies. ReducePartition owners are additionally
// capped per worker (see Placer.PlaceOwners) so that no worker owns more
// than its share of a dataset's subpartitions.
//
// Other strategies plug in with Register. A Placer (and the strategy it
// drives) is not safe for concurrent use: the manager calls it under its
// state lock.
package placement

import (
	"fmt"
	"sort"
	"strings"
	"sync"

	"github.com/sluice-shuffle/sluice/manager/api"
)

// Disk is the placement view of one disk of one worker. The manager owns the
// exported fields and calls Placer.Update after changing them.
type Disk struct {
	// Worker is a dense index the manager assigns to the disk's worker; it
	// is how owners are counted per worker.
	Worker   uint32
	WorkerID string
	ID       string
	Type     api.DiskType

	CapacityBytes uint64
	FreeBytes     uint64
	PendingBytes  uint64
	Utilization   float64
	// Usable: the worker is alive and the disk healthy.
	Usable bool
	// Unhealthy explains why the disk is not healthy (for error messages).
	Unhealthy string

	// ReservedBytes counts the expected bytes of partitions placed on the
	// disk that the worker's figures do not show yet. Place adds to it; the
	// manager halves it at every report of the worker (writes start soon
	// after placement, and the worker's pending bytes then cover them).
	ReservedBytes uint64

	// Strategy bookkeeping.
	heapIndex int // position in the load-aware heap, -1 when absent
	cost      float64
	ringIndex int // position in the round-robin ring, -1 when absent
}

// typeClass maps a disk type to the heap/ring it lives in. An unspecified
// type is treated as HDD (the conservative assumption).
func typeClass(t api.DiskType) int {
	if t == api.DiskType_SSD {
		return 0
	}
	return 1
}

// AvailableBytes is what the disk can still take before the reserve check:
// free minus pending minus reserved, floored at zero.
func (d *Disk) AvailableBytes() uint64 {
	used := d.PendingBytes + d.ReservedBytes
	if used >= d.FreeBytes {
		return 0
	}
	return d.FreeBytes - used
}

// Options configure a Placer and its strategy.
type Options struct {
	// ReserveBytes stay free on every disk: a disk whose available bytes
	// would drop below it is not chosen.
	ReserveBytes uint64
	// PartitionBytes is the expected size of a partition when the request
	// does not say; it is also the unit in which the load-aware cost counts
	// queued work.
	PartitionBytes uint64
}

// Request describes one placement call.
type Request struct {
	Preferred api.DiskType
	// Bytes is the expected size of each partition (0: Options.PartitionBytes).
	Bytes uint64
	// Accept, if set, must also approve a disk (per-worker caps). It is
	// consulted before every single choice, so it may depend on the choices
	// made earlier in the same call.
	Accept func(*Disk) bool
}

// Strategy is a pluggable placement policy. A strategy sees every disk
// through Update/Remove and must only return disks for which
// fits(req, d) holds. It is called with the Placer's lock held.
type Strategy interface {
	Name() string
	// Update tells the strategy that d is new or that its figures changed.
	Update(d *Disk)
	// Remove tells the strategy that d is gone for good.
	Remove(d *Disk)
	// Place fills out with a qualifying disk per partition, preferring
	// req.Preferred and falling back to the other types, calling reserve on
	// each disk it chooses (before the next choice). It returns how many
	// entries of out it filled (all of them unless no disk qualifies).
	Place(req *Request, out []*Disk, reserve func(*Disk)) int
}

// Factory makes a strategy from the options.
type Factory func(Options) Strategy

var (
	factoriesMu sync.Mutex
	factories   = map[string]Factory{
		"load-aware":  func(o Options) Strategy { return newLoadAware(o) },
		"round-robin": func(o Options) Strategy { return newRoundRobin(o) },
	}
)

// Register makes a strategy available by name (to the manager's
// "placement" setting). It panics if the name is taken, like
// database/sql.Register; call it from an init function.
func Register(name string, f Factory) {
	factoriesMu.Lock()
	defer factoriesMu.Unlock()
	if _, dup := factories[name]; dup || name == "" {
		panic("placement: strategy name taken or empty: " + name)
	}
	factories[name] = f
}

// Strategies lists the registered strategy names, sorted.
func Strategies() []string {
	factoriesMu.Lock()
	defer factoriesMu.Unlock()
	names := make([]string, 0, len(factories))
	for n := range factories {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// NewStrategy returns the strategy registered as name ("" is load-aware).
func NewStrategy(name string, opts Options) (Strategy, error) {
	if name == "" {
		name = "load-aware"
	}
	factoriesMu.Lock()
	f := factories[name]
	factoriesMu.Unlock()
	if f == nil {
		return nil, fmt.Errorf("unknown placement strategy %q (known: %s)", name, strings.Join(Strategies(), ", "))
	}
	return f(opts), nil
}

// Placer places partitions on disks through a Strategy and explains why
// when it cannot.
type Placer struct {
	opts     Options
	strategy Strategy
	disks    map[*Disk]struct{}
}

// NewPlacer returns a Placer using strategy.
func NewPlacer(strategy Strategy, opts Options) *Placer {
	if opts.PartitionBytes == 0 {
		opts.PartitionBytes = DefaultPartitionBytes
	}
	return &Placer{opts: opts, strategy: strategy, disks: map[*Disk]struct{}{}}
}

// DefaultPartitionBytes is the expected partition size when neither the
// configuration nor the dataset gives one.
const DefaultPartitionBytes = 64 << 20

// Update adds d or takes its changed figures into account.
func (p *Placer) Update(d *Disk) {
	if _, ok := p.disks[d]; !ok {
		d.heapIndex, d.ringIndex = -1, -1
		p.disks[d] = struct{}{}
	}
	p.strategy.Update(d)
}

// Remove forgets d.
func (p *Placer) Remove(d *Disk) {
	if _, ok := p.disks[d]; !ok {
		return
	}
	delete(p.disks, d)
	p.strategy.Remove(d)
}

func (p *Placer) bytes(req *Request) uint64 {
	if req.Bytes != 0 {
		return req.Bytes
	}
	return p.opts.PartitionBytes
}

// Fits is the qualification every strategy must apply before choosing d:
// usable, room for the partition above the reserve, and req.Accept.
func (o Options) Fits(req *Request, d *Disk) bool { return fits(&o, req, d) }

func fits(opts *Options, req *Request, d *Disk) bool {
	if !d.Usable {
		return false
	}
	b := req.Bytes
	if b == 0 {
		b = opts.PartitionBytes
	}
	if d.AvailableBytes() < opts.ReserveBytes+b {
		return false
	}
	return req.Accept == nil || req.Accept(d)
}

func (p *Placer) reserve(bytes uint64) func(*Disk) {
	return func(d *Disk) {
		d.ReservedBytes += bytes
		p.strategy.Update(d)
	}
}

// Place chooses a disk for each entry of out. It returns an *ErrNoDisk when
// fewer than len(out) could be placed; out then holds the choices made.
func (p *Placer) Place(req *Request, out []*Disk) error {
	r := *req
	r.Bytes = p.bytes(req)
	n := p.strategy.Place(&r, out, p.reserve(r.Bytes))
	if n == len(out) {
		return nil
	}
	return p.explain(&r, len(out)-n, "")
}

// PlaceOwners chooses owners for len(out) ReducePartition subpartitions of
// one dataset. owned[w] is how many subpartitions of the dataset worker w
// owns already (indexed by Disk.Worker; the slice grows as needed, and is
// updated with the new choices). total is the dataset's subpartition count.
//
// Owners are dealt level by level: every qualifying worker is first brought
// up to the count of the least loaded one plus one, and so on, so that the
// counts of a dataset's owners differ by at most one between workers that
// can take more, whatever the number of disks each worker has. Within a
// level, the strategy chooses the disk.
func (p *Placer) PlaceOwners(req *Request, total int, owned *[]uint32, out []*Disk) error {
	r := *req
	r.Bytes = p.bytes(req)
	counts := *owned
	count := func(w uint32) uint32 {
		if int(w) < len(counts) {
			return counts[w]
		}
		return 0
	}
	inner := req.Accept
	var level uint32
	r.Accept = func(d *Disk) bool {
		return count(d.Worker) < level && (inner == nil || inner(d))
	}
	reserve := p.reserve(r.Bytes)
	place := func(d *Disk) {
		for int(d.Worker) >= len(counts) {
			counts = append(counts, 0)
		}
		counts[d.Worker]++
		reserve(d)
	}
	filled := 0
	for filled < len(out) {
		workers := p.qualifyingWorkers(&r, inner)
		if len(workers) == 0 {
			break
		}
		level = ^uint32(0)
		for w := range workers {
			level = min(level, count(w))
		}
		level++
		need := 0
		for w := range workers {
			if c := count(w); c < level {
				need += int(level - c)
			}
		}
		k := min(need, len(out)-filled)
		n := p.strategy.Place(&r, out[filled:filled+k], place)
		filled += n
		if n == 0 {
			break
		}
	}
	*owned = counts
	if filled == len(out) {
		return nil
	}
	r.Accept = inner
	return p.explain(&r, len(out)-filled, fmt.Sprintf("subpartitions of the dataset (%d in all) are spread evenly over workers", total))
}

// qualifyingWorkers returns the workers with a disk that qualifies for req
// (ignoring req.Accept; accept, if set, applies instead), of the preferred
// type if there is one, else of any type.
func (p *Placer) qualifyingWorkers(req *Request, accept func(*Disk) bool) map[uint32]struct{} {
	r := *req
	r.Accept = accept
	preferred := map[uint32]struct{}{}
	anyType := map[uint32]struct{}{}
	for d := range p.disks {
		if !fits(&p.opts, &r, d) {
			continue
		}
		anyType[d.Worker] = struct{}{}
		if r.Preferred == api.DiskType_DISK_TYPE_UNSPECIFIED || typeClass(d.Type) == typeClass(r.Preferred) {
			preferred[d.Worker] = struct{}{}
		}
	}
	if len(preferred) > 0 {
		return preferred
	}
	return anyType
}

// ErrNoDisk is the error of a placement that found no qualifying disk. Its
// message names the reasons, disk by disk class.
type ErrNoDisk struct {
	Missing int
	Reasons string
}

func (e *ErrNoDisk) Error() string { return e.Reasons }

func (p *Placer) explain(req *Request, missing int, extra string) error {
	var lost, unhealthy, full, rejected []string
	for d := range p.disks {
		name := d.WorkerID + "/" + d.ID
		switch {
		case !d.Usable && d.Unhealthy == "":
			lost = append(lost, name)
		case !d.Usable:
			unhealthy = append(unhealthy, fmt.Sprintf("%s (%s)", name, d.Unhealthy))
		case d.AvailableBytes() < p.opts.ReserveBytes+req.Bytes:
			full = append(full, fmt.Sprintf("%s (%s available)", name, FormatBytes(d.AvailableBytes())))
		default:
			rejected = append(rejected, name)
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "no disk qualifies for %d partition(s) of %s each", missing, FormatBytes(req.Bytes))
	if req.Preferred != api.DiskType_DISK_TYPE_UNSPECIFIED {
		fmt.Fprintf(&b, " (preferred %s, other types allowed)", req.Preferred)
	}
	if len(p.disks) == 0 {
		b.WriteString(": no worker has registered any disk")
		return &ErrNoDisk{Missing: missing, Reasons: b.String()}
	}
	fmt.Fprintf(&b, " among %d disk(s):", len(p.disks))
	list := func(what string, names []string) {
		if len(names) == 0 {
			return
		}
		sort.Strings(names)
		if len(names) > 5 {
			names = append(names[:5:5], fmt.Sprintf("and %d more", len(names)-5))
		}
		fmt.Fprintf(&b, " %s: %s;", what, strings.Join(names, ", "))
	}
	list("on lost workers", lost)
	list("unhealthy", unhealthy)
	list(fmt.Sprintf("below the reserve of %s plus the partition", FormatBytes(p.opts.ReserveBytes)), full)
	if extra != "" {
		list("refused because "+extra, rejected)
	} else {
		list("refused", rejected)
	}
	return &ErrNoDisk{Missing: missing, Reasons: strings.TrimSuffix(b.String(), ";")}
}

// FormatBytes prints n with a binary unit ("5.0 GiB").
func FormatBytes(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit && exp < 5; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
