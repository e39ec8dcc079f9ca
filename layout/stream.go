package layout

// A streamer turns arbitrary chunks of a file, written in order, into calls
// of a parser that sees each structure whole, and runs payloads through a
// CRC without copying them. Verifiers embed one.
//
// The parser is called with the bytes from the current offset on. It either
// consumes one whole item (returning its size) or returns 0 and the number
// of bytes it needs, which must be more than it was given; the streamer then
// collects that many (copying at most one item's header) and calls again.
type streamer struct {
	off   int64  // file offset of the first byte not consumed
	stage []byte // bytes of an item that straddles chunks
	need  int    // bytes the parser needs, when staging

	// A payload being streamed through the CRC.
	payloadLeft int64
	payloadCRC  uint32

	err error // the first error; sticky
}

type itemParser interface {
	// parse consumes one item at the start of b, which starts at file
	// offset off, or returns used == 0 and need > len(b).
	parse(b []byte, off int64) (used, need int, err error)
	// payloadDone is called when the payload announced by the last parsed
	// item has streamed by, with the CRC of its bytes.
	payloadDone(crc uint32) error
}

// startPayload makes the next n bytes a payload. The caller handles n == 0.
func (s *streamer) startPayload(n int64) {
	s.payloadLeft = n
	s.payloadCRC = 0
}

func (s *streamer) write(p []byte, ps itemParser) (int, error) {
	if s.err != nil {
		return 0, s.err
	}
	total := len(p)
	for len(p) > 0 {
		if s.payloadLeft > 0 {
			k := min(int64(len(p)), s.payloadLeft)
			s.payloadCRC = UpdateChecksum(s.payloadCRC, p[:k])
			p = p[k:]
			s.off += k
			s.payloadLeft -= k
			if s.payloadLeft == 0 {
				if err := ps.payloadDone(s.payloadCRC); err != nil {
					s.err = err
					return total - len(p), err
				}
			}
			continue
		}
		b := p
		if len(s.stage) > 0 {
			k := min(s.need-len(s.stage), len(p))
			s.stage = append(s.stage, p[:k]...)
			p = p[k:]
			if len(s.stage) < s.need {
				break
			}
			b = s.stage
		}
		used, need, err := ps.parse(b, s.off)
		if err != nil {
			s.err = err
			return total - len(p), err
		}
		if used == 0 {
			if need <= len(b) {
				panic("layout: parser asked for bytes it already has")
			}
			if len(s.stage) == 0 {
				s.stage = append(s.stage, p...)
				p = nil
			}
			s.need = need
			continue
		}
		s.off += int64(used)
		if len(s.stage) > 0 {
			if used != len(s.stage) {
				panic("layout: parser consumed part of a staged item")
			}
			s.stage = s.stage[:0]
		} else {
			p = p[used:]
		}
	}
	return total, nil
}

// pending returns how many bytes the streamer holds or expects inside an
// unfinished item, for the truncation error at the end of the file.
func (s *streamer) pending() (off int64, have, need int64) {
	if s.payloadLeft > 0 {
		return s.off, 0, s.payloadLeft
	}
	return s.off, int64(len(s.stage)), int64(s.need)
}
