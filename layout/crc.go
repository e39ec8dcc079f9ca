package layout

import (
	"encoding/binary"
	"hash/crc32"
	"math/bits"
)

// castagnoli is the CRC32C table. crc32.MakeTable returns the package's own
// table for this polynomial, which is what makes crc32.Checksum use the
// hardware instruction (SSE 4.2 CRC32, ARMv8 CRC32C).
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Checksum returns the CRC32C (Castagnoli) of b, the checksum every Sluice
// file and frame uses. A producer computes a payload's checksum with it.
func Checksum(b []byte) uint32 { return crc32.Checksum(b, castagnoli) }

// UpdateChecksum extends crc, a Checksum of earlier bytes, with b.
func UpdateChecksum(crc uint32, b []byte) uint32 { return crc32.Update(crc, castagnoli, b) }

// flipSearchMax bounds the length of a range whose checksum mismatch is
// analysed for a single flipped bit. The analysis costs eight table steps per
// byte and needs no data (see findBitFlip), so this is generous.
const flipSearchMax = 16 << 20

// checkCRC compares the CRC32C of data, which starts at file offset off, with
// the little-endian value stored in stored. On a mismatch it says whether one
// flipped bit in data or in the stored value explains it.
func checkCRC(kind FileKind, off int64, data, stored []byte, what string) error {
	want := binary.LittleEndian.Uint32(stored)
	got := Checksum(data)
	if want == got {
		return nil
	}
	return crcMismatch(kind, off, int64(len(data)), what, want, got)
}

// crcMismatch builds the error for a checksum over n bytes at off whose
// stored value is want and computed value got. The stored value is assumed to
// follow the data directly; when it does not, the caller fixes Flip.Offset.
func crcMismatch(kind FileKind, off, n int64, what string, want, got uint32) *CorruptError {
	e := mismatch(kind, off, n, what, uint64(want), uint64(got))
	e.Flip = explainFlip(off, n, off+n, want, got)
	return e
}

// explainFlip looks for one flipped bit that turns the CRC32C of n bytes at
// dataOff into got instead of want, either in the data or in the stored
// checksum at crcOff.
func explainFlip(dataOff, n, crcOff int64, want, got uint32) BitFlip {
	syndrome := want ^ got
	if bits.OnesCount32(syndrome) == 1 {
		// Only the stored value differs, by one bit.
		bit := bits.TrailingZeros32(syndrome)
		return BitFlip{Searched: true, Found: true, InCRC: true,
			Offset: crcOff + int64(bit/8), Bit: uint8(bit % 8)}
	}
	if n > flipSearchMax {
		return BitFlip{}
	}
	pos, bit, ok := findBitFlip(int(n), syndrome)
	if !ok {
		return BitFlip{Searched: true}
	}
	return BitFlip{Searched: true, Found: true, Offset: dataOff + int64(pos), Bit: bit}
}

// findBitFlip returns the byte and bit of a message of n bytes whose flip
// changes the message's CRC32C by syndrome (the XOR of the two checksums).
//
// A CRC is linear over GF(2): crc(m ^ e) = crc(m) ^ raw(e), where raw is the
// register arithmetic with a zero initial value and no final inversion. The
// effect of flipping bit b of byte p therefore depends only on b and on the
// number of bytes after p, not on the data: it is the table entry for the
// byte 1<<b, advanced through one zero byte per following byte. Walking from
// the last byte backwards costs eight table steps per byte and needs no
// copy of the data, so the verifier can analyse a payload it has already
// streamed past.
func findBitFlip(n int, syndrome uint32) (pos int, bit uint8, ok bool) {
	var reg [8]uint32
	for b := range reg {
		reg[b] = castagnoli[1<<b]
	}
	for k := range n {
		for b := range reg {
			if reg[b] == syndrome {
				return n - 1 - k, uint8(b), true
			}
			reg[b] = castagnoli[byte(reg[b])] ^ reg[b]>>8
		}
	}
	return 0, 0, false
}
