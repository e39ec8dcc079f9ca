package layout

import (
	"errors"
	"fmt"
	"strings"
)

// Sentinel errors. Every error a decoder or verifier returns for bad bytes
// matches one of them with errors.Is; errors.As gives the details.
var (
	// ErrCorrupt: the bytes are not a valid Sluice file. The error is a
	// *CorruptError. Truncation is a kind of corruption, so errors.Is(err,
	// ErrCorrupt) also holds for ErrTruncated.
	ErrCorrupt = errors.New("layout: corrupt")
	// ErrTruncated: the file ends before a structure it promises. The error
	// is a *CorruptError with Truncated set.
	ErrTruncated = errors.New("layout: truncated")
	// ErrVersion: a newer format major. The error is a *VersionError.
	ErrVersion = errors.New("layout: unsupported format version")
	// ErrUncommitted: the commit log has no record of a partition file:
	// it was never committed (or was released), so recovery deletes it and
	// fsck reports it INCOMPLETE rather than CORRUPT.
	ErrUncommitted = errors.New("layout: no commit record")
	// ErrInvalid: an encoder was given a value the format cannot hold (an
	// identity too long, a subpartition out of range, buffers out of order).
	// It is a caller's mistake, never the disk's.
	ErrInvalid = errors.New("layout: invalid argument")
)

// CorruptError describes the first problem found in a file: where, how long
// the structure is, what was checked, and what was expected.
type CorruptError struct {
	File   FileKind // the kind of file
	Offset int64    // file offset of the structure or field that failed
	Length int64    // its length in bytes (0 when unknown)
	What   string   // the structure and check, e.g. "buffer header CRC"

	// Expected and Actual hold the stored and the computed value (a CRC, a
	// count, a length) when HasValues is set.
	Expected, Actual uint64
	HasValues        bool

	// Truncated is set when the file ends before the structure does.
	Truncated bool

	// Flip is the single-bit-flip analysis of a checksum mismatch.
	Flip BitFlip
}

// BitFlip says whether one flipped bit explains a checksum mismatch. Disks and
// memory that flip one bit are worth knowing about; software that writes
// garbage produces many.
type BitFlip struct {
	Searched bool  // the search ran (it is skipped for very long ranges)
	Found    bool  // one flipped bit explains the mismatch
	Offset   int64 // file offset of the byte holding that bit
	Bit      uint8 // the bit, 0 = least significant
	InCRC    bool  // the flipped bit is in the stored checksum itself
}

func (e *CorruptError) Error() string {
	var b strings.Builder
	if e.Truncated {
		b.WriteString("layout: truncated ")
	} else {
		b.WriteString("layout: corrupt ")
	}
	b.WriteString(e.File.String())
	fmt.Fprintf(&b, " at offset %d", e.Offset)
	if e.Length > 0 {
		fmt.Fprintf(&b, " (%d bytes)", e.Length)
	}
	b.WriteString(": ")
	b.WriteString(e.What)
	if e.HasValues {
		fmt.Fprintf(&b, ": expected %#x, found %#x", e.Expected, e.Actual)
	}
	if e.Flip.Found {
		where := "data"
		if e.Flip.InCRC {
			where = "stored checksum"
		}
		fmt.Fprintf(&b, "; one flipped bit explains it (%s byte at offset %d, bit %d)", where, e.Flip.Offset, e.Flip.Bit)
	} else if e.Flip.Searched {
		b.WriteString("; no single flipped bit explains it")
	}
	return b.String()
}

// Is makes errors.Is(err, ErrCorrupt) hold for every CorruptError and
// errors.Is(err, ErrTruncated) for truncations.
func (e *CorruptError) Is(target error) bool {
	return target == ErrCorrupt || (e.Truncated && target == ErrTruncated)
}

// VersionError reports a file written by a newer major than this build reads.
type VersionError struct {
	File  FileKind
	Found Version
}

func (e *VersionError) Error() string {
	return fmt.Sprintf("layout: %v file has format version %v, written by a newer Sluice; "+
		"this build reads format %d.x (up to %v): upgrade Sluice to read it",
		e.File, e.Found, Current.Major(), Current)
}

// Is makes errors.Is(err, ErrVersion) hold.
func (e *VersionError) Is(target error) bool { return target == ErrVersion }

func corruptf(kind FileKind, off, n int64, format string, args ...any) *CorruptError {
	return &CorruptError{File: kind, Offset: off, Length: n, What: fmt.Sprintf(format, args...)}
}

func mismatch(kind FileKind, off, n int64, what string, expected, actual uint64) *CorruptError {
	return &CorruptError{File: kind, Offset: off, Length: n, What: what,
		Expected: expected, Actual: actual, HasValues: true}
}

// truncatedAt reports a structure at off that needs need bytes of which the
// file holds only have.
func truncatedAt(kind FileKind, off, have, need int64, what string) *CorruptError {
	return &CorruptError{File: kind, Offset: off, Length: need, Truncated: true,
		What: fmt.Sprintf("%s needs %d bytes, the file ends after %d", what, need, have)}
}

func invalidf(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalid}, args...)...)
}
