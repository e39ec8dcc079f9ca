package engine

// Placement chooses the disk of a new partition among candidates, every one
// healthy and with its free space above its reserve (after the partition's
// size hint). It returns an index into candidates. Store.Open takes one in
// Config.Placement; DefaultPlacement is the default.
type Placement func(req PlacementRequest, candidates []DiskStatus) int

// PlacementRequest describes the partition being placed.
type PlacementRequest struct {
	Partition PartitionRef
	// Prefer is the disk type the dataset asks for (DiskUnknown: any).
	Prefer DiskType
	// SizeHint is the expected size in bytes, 0 if unknown.
	SizeHint int64
}

// DiskStatus is what placement knows of a disk.
type DiskStatus struct {
	Index   int // position in the store's disks
	ID      string
	Path    string
	Type    DiskType
	State   DiskState
	Free    int64 // bytes free now
	Reserve int64
	// PendingBytes is what the disk's writers hold and have not written.
	PendingBytes int64
	// OpenWriters counts partitions being written on the disk.
	OpenWriters int
}

// DefaultPlacement prefers disks of the requested type (SSDs for
// DiskUnknown requests and unknown devices alike; it falls back to the other
// type when none of the preferred type can take the partition), then the
// disk with the least pending bytes, then the fewest open writers, then the
// most free space.
func DefaultPlacement(req PlacementRequest, candidates []DiskStatus) int {
	want := req.Prefer
	if want == DiskUnknown {
		want = DiskSSD
	}
	typeOf := func(t DiskType) DiskType {
		if t == DiskUnknown {
			return DiskSSD
		}
		return t
	}
	best := -1
	for i, c := range candidates {
		if best < 0 || better(candidates[i], candidates[best], typeOf(c.Type) == want, typeOf(candidates[best].Type) == want) {
			best = i
		}
	}
	return best
}

func better(a, b DiskStatus, aPreferred, bPreferred bool) bool {
	if aPreferred != bPreferred {
		return aPreferred
	}
	if a.PendingBytes != b.PendingBytes {
		return a.PendingBytes < b.PendingBytes
	}
	if a.OpenWriters != b.OpenWriters {
		return a.OpenWriters < b.OpenWriters
	}
	return a.Free > b.Free
}
