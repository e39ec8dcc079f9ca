package engine

import (
	"errors"
	"fmt"
	"syscall"

	"github.com/sluice-shuffle/sluice/engine/diskio"
)

// Errors. Every error the engine returns for one of these conditions
// matches the sentinel with errors.Is; most carry the partition or disk and
// the underlying cause as well.
var (
	// ErrDiskFull: the disk ran out of space (ENOSPC, EDQUOT, or a write the
	// kernel kept cutting short). The partition that hit it is aborted and
	// its files removed; the disk takes no new partitions until its free
	// space is above the reserve again.
	ErrDiskFull = errors.New("engine: disk full")
	// ErrDiskFailed: the disk returned an IO error (EIO) or stopped
	// answering. Its partitions are reported lost; the other disks go on.
	ErrDiskFailed = errors.New("engine: disk failed")
	// ErrNoDisk: no healthy disk with free space above the reserve can take
	// a new partition.
	ErrNoDisk = errors.New("engine: no disk can take the partition")
	// ErrNotFound: no committed (or open, for pushes) partition of that
	// identity on this worker.
	ErrNotFound = errors.New("engine: no such partition")
	// ErrExists: a MapPartition of that identity is being written or is
	// committed already.
	ErrExists = errors.New("engine: partition exists")
	// ErrBadData: bytes received for storage failed verification (header or
	// payload CRC, field ranges, subpartition order). Nothing of them was
	// stored; the writer is still usable. The layout error is wrapped.
	ErrBadData = errors.New("engine: received bytes failed verification")
	// ErrSeqGap: a segment's seq is ahead of the next one expected from its
	// (map, attempt): a push was lost in between.
	ErrSeqGap = errors.New("engine: segment sequence gap")
	// ErrAttemptClosed: the (map, attempt) was aborted, lost in a crash, or
	// already committed, and takes no more segments; a rerun pushes as a new
	// attempt.
	ErrAttemptClosed = errors.New("engine: attempt takes no more segments")
	// ErrConflict: another attempt of the same map committed first.
	ErrConflict = errors.New("engine: another attempt committed")
	// ErrFinalized: the ReducePartition is finalized and takes no pushes or
	// commits.
	ErrFinalized = errors.New("engine: partition finalized")
	// ErrNotFinalized: a ReducePartition is read only once finalized.
	ErrNotFinalized = errors.New("engine: partition not finalized")
	// ErrAborted: the writer was aborted (by its owner, by a failed write,
	// or by a release of its dataset).
	ErrAborted = errors.New("engine: writer aborted")
	// ErrReleased: the partition's dataset or job was released.
	ErrReleased = errors.New("engine: released")
	// ErrTooLarge: a reservation longer than the writer's MaxReserve; write
	// such a buffer with the copying Write/Push instead.
	ErrTooLarge = errors.New("engine: reservation larger than one write buffer")
	// ErrClosed: the store or disk is closed.
	ErrClosed = errors.New("engine: closed")
)

// PartitionError says which partition an error is about.
type PartitionError struct {
	Partition PartitionRef
	Disk      string // the disk's directory
	Err       error
}

func (e *PartitionError) Error() string {
	return fmt.Sprintf("engine: %s on %s: %v", e.Partition, e.Disk, e.Err)
}

func (e *PartitionError) Unwrap() error { return e.Err }

// faultKind classifies an IO error: does it fill the disk, fail it, or
// concern only the request?
type faultKind uint8

const (
	faultNone faultKind = iota
	faultOther
	faultFull
	faultFailed
)

func classify(err error) faultKind {
	switch {
	case err == nil:
		return faultNone
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT), errors.Is(err, diskio.ErrShortWrite):
		return faultFull
	case errors.Is(err, syscall.EIO), errors.Is(err, syscall.EROFS), errors.Is(err, syscall.ENXIO),
		errors.Is(err, syscall.ENODEV), errors.Is(err, syscall.EUCLEAN):
		return faultFailed
	}
	return faultOther
}

// wrapFault adds the engine's sentinel to an IO error.
func wrapFault(err error) error {
	switch classify(err) {
	case faultFull:
		if !errors.Is(err, ErrDiskFull) {
			return fmt.Errorf("%w: %w", ErrDiskFull, err)
		}
	case faultFailed:
		if !errors.Is(err, ErrDiskFailed) {
			return fmt.Errorf("%w: %w", ErrDiskFailed, err)
		}
	}
	return err
}
