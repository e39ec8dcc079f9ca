package engine

import (
	"fmt"
	"strings"

	"github.com/sluice-shuffle/sluice/layout"
)

// DiskType is the kind of device behind a disk, for placement.
type DiskType uint8

const (
	// DiskUnknown: no block device (tmpfs, overlay) or nothing in sysfs.
	// Placement treats it like an SSD.
	DiskUnknown DiskType = iota
	// DiskSSD: a non-rotational device.
	DiskSSD
	// DiskHDD: a rotational device.
	DiskHDD
)

func (t DiskType) String() string {
	switch t {
	case DiskSSD:
		return "ssd"
	case DiskHDD:
		return "hdd"
	}
	return "unknown"
}

// ParseDiskType parses "ssd", "hdd" (any case) or "" (detect).
func ParseDiskType(s string) (DiskType, error) {
	switch strings.ToLower(s) {
	case "":
		return DiskUnknown, nil
	case "ssd":
		return DiskSSD, nil
	case "hdd":
		return DiskHDD, nil
	}
	return DiskUnknown, fmt.Errorf("engine: disk type %q: want ssd or hdd", s)
}

// DiskState is a disk's health as placement and the manager see it.
type DiskState uint8

const (
	// DiskHealthy: takes new partitions.
	DiskHealthy DiskState = iota
	// DiskFull: ran out of space; takes no new partitions until its free
	// space is above the reserve again, serves what it holds.
	DiskFull
	// DiskFailed: IO errors or a hang; its partitions are lost, it takes and
	// serves nothing.
	DiskFailed
)

func (s DiskState) String() string {
	switch s {
	case DiskHealthy:
		return "healthy"
	case DiskFull:
		return "full"
	case DiskFailed:
		return "failed"
	}
	return fmt.Sprintf("state(%d)", uint8(s))
}

// PartitionKind tells MapPartitions from ReducePartitions.
type PartitionKind uint8

const (
	// KindMap is one producer attempt's MapPartition.
	KindMap PartitionKind = iota + 1
	// KindReduce is one subpartition's merged ReducePartition.
	KindReduce
)

func (k PartitionKind) String() string {
	switch k {
	case KindMap:
		return "map"
	case KindReduce:
		return "reduce"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// PartitionRef names a partition: a MapPartition by (job, dataset, map
// index, attempt), a ReducePartition by (job, dataset, reduce index).
type PartitionRef struct {
	Kind    PartitionKind
	Job     string
	Dataset string
	Index   uint32 // map index or reduce index
	Attempt uint32 // MapPartitions only
}

func (r PartitionRef) String() string {
	if r.Kind == KindMap {
		return fmt.Sprintf("map partition %q/%q/%d attempt %d", r.Job, r.Dataset, r.Index, r.Attempt)
	}
	return fmt.Sprintf("reduce partition %q/%q/%d", r.Job, r.Dataset, r.Index)
}

// Path is the partition file's path relative to its disk's directory.
func (r PartitionRef) Path() string {
	if r.Kind == KindMap {
		return layout.MapPartitionPath([]byte(r.Job), []byte(r.Dataset), r.Index, r.Attempt)
	}
	return layout.ReducePartitionPath([]byte(r.Job), []byte(r.Dataset), r.Index)
}

func mapRef(k layout.MapKey) PartitionRef {
	return PartitionRef{Kind: KindMap, Job: k.Job, Dataset: k.Dataset, Index: k.Map, Attempt: k.Attempt}
}

func reduceRef(k layout.ReduceKey) PartitionRef {
	return PartitionRef{Kind: KindReduce, Job: k.Job, Dataset: k.Dataset, Index: k.Reduce}
}

// EventKind says what an Event reports.
type EventKind uint8

const (
	// EventMapCommitted: a MapPartition is durable and readable.
	EventMapCommitted EventKind = iota + 1
	// EventReduceCommitted: a producer attempt committed its segments in a
	// ReducePartition (Map, Attempt).
	EventReduceCommitted
	// EventReduceFinalized: a ReducePartition is finalized and readable.
	EventReduceFinalized
	// EventPartitionLost: a partition cannot be served any more (its file is
	// missing, short or corrupt); Err says why.
	EventPartitionLost
	// EventMapsLost: an open ReducePartition lost the committed segments of
	// the producers in LostMaps (a crash before finalize); exactly those
	// producers must run again. Such losses are found only by recovery,
	// which lists them in RecoveryReport (RecoveredPartition.LostMaps);
	// the engine does not emit this event today.
	EventMapsLost
	// EventDiskFull: the disk ran out of space and takes no new partitions.
	EventDiskFull
	// EventDiskFailed: the disk failed; Lost lists every partition it held.
	EventDiskFailed
	// EventDiskRecovered: a full disk has free space above the reserve again.
	EventDiskRecovered
	// EventReleased: a dataset or job was released (Partition names it:
	// Index and Attempt zero, Dataset empty for a job); its files are being
	// deleted.
	EventReleased
)

func (k EventKind) String() string {
	switch k {
	case EventMapCommitted:
		return "map-committed"
	case EventReduceCommitted:
		return "reduce-committed"
	case EventReduceFinalized:
		return "reduce-finalized"
	case EventPartitionLost:
		return "partition-lost"
	case EventMapsLost:
		return "maps-lost"
	case EventDiskFull:
		return "disk-full"
	case EventDiskFailed:
		return "disk-failed"
	case EventDiskRecovered:
		return "disk-recovered"
	case EventReleased:
		return "released"
	}
	return fmt.Sprintf("event(%d)", uint8(k))
}

// Event is something the manager must learn: the worker wiring forwards
// them. Fields a kind does not use are zero.
type Event struct {
	Kind     EventKind
	Disk     layout.ID
	DiskPath string
	// Partition is the partition (or, for EventReleased, the dataset or job)
	// concerned.
	Partition PartitionRef
	// Length is the committed file length (map) or the finalized one.
	Length int64
	// Map and Attempt are the producer of an EventReduceCommitted.
	Map, Attempt uint32
	// LostMaps are the producers whose committed segments an open
	// ReducePartition lost (EventMapsLost).
	LostMaps []uint32
	// Lost lists every partition of a failed disk (EventDiskFailed).
	Lost []PartitionRef
	// Err is the cause of a loss or a disk fault.
	Err error
}
