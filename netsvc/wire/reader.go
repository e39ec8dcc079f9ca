package wire

import (
	"errors"
	"fmt"
	"io"
)

// ReadHeader reads one frame header from r into buf[:HeaderSize] and
// decodes it (DecodeHeader). The body stays unread: the caller reads it
// wherever it belongs, a data body straight into a pool buffer. A
// connection that ends exactly before a header gives io.EOF, one that ends
// inside it io.ErrUnexpectedEOF.
func ReadHeader(r io.Reader, buf []byte, rules HeaderRules) (Header, error) {
	if len(buf) < HeaderSize {
		return Header{}, fmt.Errorf("wire: header buffer of %d bytes, need %d", len(buf), HeaderSize)
	}
	if _, err := io.ReadFull(r, buf[:HeaderSize]); err != nil {
		return Header{}, err
	}
	return DecodeHeader(buf[:HeaderSize], rules)
}

// FrameReader reads frames from a connection one header at a time and
// leaves each body to its caller: Next reads and checks a header, then
// Read, ReadFull or ReadBody take the body into any memory (a server reads
// a WRITE_DATA body into the engine's aligned write buffer, a client a
// READ_DATA body into its receive buffer), and whatever the caller leaves
// unread is skipped by the next call to Next or by Discard. It allocates
// nothing after NewFrameReader. A FrameReader is not safe for concurrent
// use; a connection has one reading goroutine.
type FrameReader struct {
	r     io.Reader
	rules HeaderRules
	hdr   [HeaderSize]byte
	h     Header
	left  int  // unread body bytes of the current frame
	dead  bool // a fatal error or a short read: framing is lost
	skip  [4096]byte
}

// ErrFraming is returned by a FrameReader after a fatal header error or a
// failed read: the stream's frame boundaries are lost.
var ErrFraming = errors.New("wire: frame stream broken")

// NewFrameReader reads frames from r under rules.
func NewFrameReader(r io.Reader, rules HeaderRules) *FrameReader {
	return &FrameReader{r: r, rules: rules}
}

// SetVersion sets the negotiated major once the handshake is done.
func (fr *FrameReader) SetVersion(v uint8) { fr.rules.Version = v }

// Rules returns the rules headers are checked against.
func (fr *FrameReader) Rules() HeaderRules { return fr.rules }

// Next skips what is left of the current body, then reads and checks the
// next header. On a non-fatal *Error the header is returned too and its
// body is pending: the caller answers with an ERROR and calls Next again
// (or Discard). A fatal error ends the reader.
func (fr *FrameReader) Next() (Header, error) {
	if err := fr.Discard(); err != nil {
		return Header{}, err
	}
	if _, err := io.ReadFull(fr.r, fr.hdr[:]); err != nil {
		fr.dead = true
		return Header{}, err
	}
	h, err := DecodeHeader(fr.hdr[:], fr.rules)
	if err != nil {
		var e *Error
		if !errors.As(err, &e) || e.Fatal {
			fr.dead = true
			return h, err
		}
	}
	fr.h, fr.left = h, int(h.Length)
	return h, err
}

// Header is the current frame's header.
func (fr *FrameReader) Header() Header { return fr.h }

// Remaining is the number of unread body bytes of the current frame.
func (fr *FrameReader) Remaining() int { return fr.left }

// Read reads from the current body; it returns io.EOF at its end.
func (fr *FrameReader) Read(p []byte) (int, error) {
	if fr.dead {
		return 0, ErrFraming
	}
	if fr.left == 0 {
		return 0, io.EOF
	}
	p = p[:min(len(p), fr.left)]
	n, err := fr.r.Read(p)
	fr.left -= n
	if err == io.EOF && fr.left > 0 {
		err = io.ErrUnexpectedEOF
	}
	if err != nil && err != io.EOF {
		fr.dead = true
	}
	return n, err
}

// ReadFull reads exactly len(p) bytes of the current body.
func (fr *FrameReader) ReadFull(p []byte) error {
	if len(p) > fr.left {
		return fmt.Errorf("wire: %d bytes asked of a %v body with %d left", len(p), fr.h.Type, fr.left)
	}
	if fr.dead {
		return ErrFraming
	}
	n, err := io.ReadFull(fr.r, p)
	fr.left -= n
	if err != nil {
		fr.dead = true
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return err
	}
	return nil
}

// ReadBody reads the rest of the current body into buf, which must have
// room for it, and checks it against the header (CheckBody). A control
// body is at most MaxControlBody bytes, so a buffer of that size takes any.
func (fr *FrameReader) ReadBody(buf []byte) ([]byte, error) {
	n := int(fr.h.Length)
	if fr.left != n {
		return nil, fmt.Errorf("wire: ReadBody after %d bytes of the body were read", n-fr.left)
	}
	if cap(buf) < n {
		return nil, fmt.Errorf("wire: %v body of %d bytes, buffer of %d", fr.h.Type, n, cap(buf))
	}
	body := buf[:n]
	if err := fr.ReadFull(body); err != nil {
		return nil, err
	}
	if err := CheckBody(&fr.h, body); err != nil {
		return nil, err
	}
	return body, nil
}

// Discard skips what is left of the current body.
func (fr *FrameReader) Discard() error {
	if fr.dead {
		return ErrFraming
	}
	for fr.left > 0 {
		if err := fr.ReadFull(fr.skip[:min(fr.left, len(fr.skip))]); err != nil {
			return err
		}
	}
	return nil
}
