package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Records inside a payload. The uncompressed payload of a buffer or
// segment written by a Sluice client is a sequence of entries, each an
// unsigned LEB128 varint h followed by h>>1 bytes:
//
//	+-------------------------+-------------------+-----+
//	| h = length<<1 | more    | length bytes      | ... |
//	| uvarint, 1 to 5 bytes   |                   |     |
//	+-------------------------+-------------------+-----+
//
// An entry with more = 0 ends a record: a whole record, or the last
// fragment of a record split because it does not fit one buffer. An entry
// with more = 1 is a fragment that the next buffer of the same
// subpartition (the segment with the next seq of the same map and attempt)
// continues; it is the last entry of its payload. The worker never looks
// inside payloads; only producers and consumers do.

// MaxFragmentHeader is the longest entry header.
const MaxFragmentHeader = 5

// ErrRecordFraming is the error of ParseFragment for a payload whose
// entries do not parse.
var ErrRecordFraming = errors.New("wire: bad record framing")

// FragmentHeaderLen is the size of the header of an entry of n bytes.
func FragmentHeaderLen(n int) int {
	v := uint64(n) << 1
	switch {
	case v < 1<<7:
		return 1
	case v < 1<<14:
		return 2
	case v < 1<<21:
		return 3
	case v < 1<<28:
		return 4
	}
	return 5
}

// AppendFragment appends an entry of frag with the given more bit.
func AppendFragment(dst, frag []byte, more bool) []byte {
	h := uint64(len(frag)) << 1
	if more {
		h |= 1
	}
	dst = binary.AppendUvarint(dst, h)
	return append(dst, frag...)
}

// AppendRecord appends a whole record (one entry with more = 0).
func AppendRecord(dst, rec []byte) []byte { return AppendFragment(dst, rec, false) }

// ParseFragment parses the entry at the start of b: its bytes (aliasing
// b), its more bit, and the entry's size. It allocates nothing unless it
// fails.
func ParseFragment(b []byte) (frag []byte, more bool, size int, err error) {
	if len(b) == 0 {
		return nil, false, 0, fmt.Errorf("%w: empty entry", ErrRecordFraming)
	}
	h, hl := uint64(b[0]), 1
	if h >= 0x80 {
		var n int
		h, n = binary.Uvarint(b)
		if n <= 0 || n > MaxFragmentHeader {
			return nil, false, 0, fmt.Errorf("%w: entry header is not a varint of at most %d bytes", ErrRecordFraming, MaxFragmentHeader)
		}
		hl = n
	}
	n := h >> 1
	if n > uint64(len(b)-hl) {
		return nil, false, 0, fmt.Errorf("%w: entry of %d bytes, %d left in the payload", ErrRecordFraming, n, len(b)-hl)
	}
	size = hl + int(n)
	return b[hl:size:size], h&1 != 0, size, nil
}
