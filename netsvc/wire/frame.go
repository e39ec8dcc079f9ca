package wire

import (
	"errors"
	"fmt"
)

// DecodeFrame decodes the whole frame at the start of b, the way a
// receiver checks it: the header under rules (DecodeHeader), the body
// against the header (CheckBody), the body's fields (DecodeBody), and the
// stored bytes of data frames: a WRITE_DATA or PUSH_DATA body must be
// exactly one stored buffer or segment whose CRCs hold, and a READ_DATA
// body whole buffers or segments (all of one kind) whose CRCs hold; a
// failure there is CORRUPT_DATA. It returns the frame's size. Errors are
// *Error, as a receiver would send them.
//
// It is the reference check for the golden vectors and the fuzz targets;
// a connection's reader does the same steps on a stream (FrameReader).
// The message aliases b.
func DecodeFrame(b []byte, rules HeaderRules) (Header, Message, int, error) {
	h, err := DecodeHeader(b, rules)
	if err != nil {
		return h, nil, 0, err
	}
	size := HeaderSize + int(h.Length)
	if len(b) < size {
		return h, nil, 0, &Error{Code: CodeMalformed, Channel: h.Channel, Fatal: true,
			Msg: fmt.Sprintf("%v body of %d bytes, %d follow the header", h.Type, h.Length, len(b)-HeaderSize)}
	}
	m, err := DecodeMessage(&h, b[HeaderSize:size])
	if err != nil {
		return h, nil, size, err
	}
	if err := checkStored(&h, m); err != nil {
		return h, m, size, err
	}
	return h, m, size, nil
}

func checkStored(h *Header, m Message) error {
	var stored []byte
	segment, exact := false, true
	switch m := m.(type) {
	case *WriteData:
		stored = m.Stored
	case *PushData:
		stored, segment = m.Stored, true
	case *ReadData:
		stored, exact = m.Stored, false
		if len(stored) > 0 {
			segment = stored[0] == 'S'
		}
	default:
		return nil
	}
	for off := 0; off < len(stored); {
		it, err := NextStored(stored[off:], segment)
		if err != nil {
			return corruptData(h, off, err)
		}
		off += it.Size
		if exact && off != len(stored) {
			return corruptData(h, off, fmt.Errorf("%d bytes follow the stored item", len(stored)-off))
		}
	}
	return nil
}

func corruptData(h *Header, off int, err error) *Error {
	msg := fmt.Sprintf("%v stored bytes at body offset %d: %v", h.Type, off, err)
	var ce *CorruptError
	if errors.As(err, &ce) && ce.Flip.Found {
		msg += " (one flipped bit)"
	}
	return &Error{Code: CodeCorruptData, Channel: h.Channel, Msg: msg}
}
