package wire

import (
	"encoding/binary"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/pierrec/lz4/v4"
)

// Describe prints a sequence of frames field by field with annotated hex:
// every header and body field, each stored buffer or segment's header, and
// the records in its payload. It checks what it prints (CRCs, lengths,
// record framing) and says where a frame goes wrong; it never panics on any
// input. The golden vectors' *.txt files are its output.
func Describe(b []byte) string {
	var d describer
	for off := 0; off < len(b); {
		n, ok := d.frame(b[off:], off)
		if !ok {
			break
		}
		off += n
	}
	return d.String()
}

type describer struct{ strings.Builder }

func (d *describer) line(off int, raw []byte, name, value string) {
	h := make([]byte, 0, 48)
	for i, c := range raw {
		if i == 16 {
			h = append(h, "…"...)
			break
		}
		h = strconv.AppendUint(h, uint64(c>>4), 16)
		h = strconv.AppendUint(h, uint64(c&15), 16)
		h = append(h, ' ')
	}
	fmt.Fprintf(d, "%8d  %-49s %-24s %s\n", off, h, name, value)
}

func (d *describer) frame(b []byte, base int) (int, bool) {
	if len(b) < HeaderSize {
		fmt.Fprintf(d, "%d: %d bytes left, a frame header needs %d\n", base, len(b), HeaderSize)
		return 0, false
	}
	// The describer checks the header's own rules only; which version a
	// connection negotiated is not known here.
	hb := b[:HeaderSize]
	h := Header{Version: hb[0], Type: Type(hb[1]), Flags: hb[2],
		Channel: binary.LittleEndian.Uint32(hb[4:]), Length: binary.LittleEndian.Uint32(hb[8:]),
		BodyCRC: binary.LittleEndian.Uint32(hb[12:])}
	total := HeaderSize + int64(h.Length)
	fmt.Fprintf(d, "%d-%d  %v frame on channel %d (%d bytes)\n", base, int64(base)+total, h.Type, h.Channel, total)
	d.line(base+0, hb[0:1], "version", strconv.Itoa(int(h.Version)))
	d.line(base+1, hb[1:2], "type", h.Type.String())
	d.line(base+2, hb[2:3], "flags", fmt.Sprintf("%#02x", h.Flags))
	d.line(base+3, hb[3:4], "reserved", fmt.Sprintf("%#02x", hb[3]))
	d.line(base+4, hb[4:8], "channel", strconv.FormatUint(uint64(h.Channel), 10))
	d.line(base+8, hb[8:12], "body length", strconv.FormatUint(uint64(h.Length), 10))
	d.line(base+12, hb[12:16], "body CRC32C", fmt.Sprintf("%#08x", h.BodyCRC))
	want := binary.LittleEndian.Uint32(hb[16:])
	d.line(base+16, hb[16:20], "header CRC32C", crcNote(want, Checksum(hb[:16])))
	if int64(len(b)) < total {
		fmt.Fprintf(d, "  the body needs %d bytes, %d follow\n", h.Length, len(b)-HeaderSize)
		return 0, false
	}
	body := b[HeaderSize:total]
	fs, ok := schemas[h.Type]
	if !ok {
		fmt.Fprintf(d, "  unknown type: %d body bytes not described\n", len(body))
		return int(total), true
	}
	d.body(body, base+HeaderSize, fs, h.Type)
	fields := body
	if typeInfos[h.Type].Data {
		fields = body[:min(len(body), typeInfos[h.Type].Fields)]
	}
	if got := Checksum(fields); got != h.BodyCRC {
		fmt.Fprintf(d, "  body CRC mismatch: header says %#08x, fields give %#08x\n", h.BodyCRC, got)
	}
	if m := NewMessage(h.Type); m != nil {
		if err := m.DecodeBody(body); err != nil {
			fmt.Fprintf(d, "  invalid: %v\n", err)
		}
	}
	return int(total), true
}

func crcNote(want, got uint32) string {
	if want == got {
		return fmt.Sprintf("%#08x (ok)", want)
	}
	return fmt.Sprintf("%#08x (MISMATCH: computed %#08x)", want, got)
}

// body describes the fields of one body.
func (d *describer) body(b []byte, base int, fs []field, t Type) {
	off := 0
	short := func(n int, name string) bool {
		if n > len(b)-off {
			fmt.Fprintf(d, "%8d  %s needs %d bytes, %d left\n", base+off, name, n, len(b)-off)
			return true
		}
		return false
	}
	for _, f := range fs {
		switch f.kind {
		case fU8, fU16, fU32, fU64:
			n := map[fieldKind]int{fU8: 1, fU16: 2, fU32: 4, fU64: 8}[f.kind]
			if short(n, f.name) {
				return
			}
			var v uint64
			for i := n - 1; i >= 0; i-- {
				v = v<<8 | uint64(b[off+i])
			}
			d.line(base+off, b[off:off+n], f.name, formatValue(f.as, v))
			off += n
		case fBytes:
			if short(f.size, f.name) {
				return
			}
			d.line(base+off, b[off:off+f.size], f.name, formatBytes(f.as, b[off:off+f.size]))
			off += f.size
		case fStr8, fStr16:
			lw := 1
			if f.kind == fStr16 {
				lw = 2
			}
			if short(lw, f.name+" length") {
				return
			}
			n := int(b[off])
			if lw == 2 {
				n = int(binary.LittleEndian.Uint16(b[off:]))
			}
			d.line(base+off, b[off:off+lw], f.name+" length", strconv.Itoa(n))
			off += lw
			if short(n, f.name) {
				return
			}
			if n > 0 {
				d.line(base+off, b[off:off+n], f.name, formatBytes(f.as, b[off:off+n]))
			}
			off += n
		case fCredit:
			if short(4, "entry count") {
				return
			}
			n := binary.LittleEndian.Uint32(b[off:])
			d.line(base+off, b[off:off+4], "entry count", strconv.FormatUint(uint64(n), 10))
			off += 4
			for i := 0; i < int(n) && !short(8, "entry"); i++ {
				d.line(base+off, b[off:off+8], fmt.Sprintf("entry %d", i), fmt.Sprintf("channel %d: %d bytes",
					binary.LittleEndian.Uint32(b[off:]), binary.LittleEndian.Uint32(b[off+4:])))
				off += 8
			}
		case fStored:
			d.stored(b[off:], base+off, t)
			return
		}
	}
	if off < len(b) {
		d.line(base+off, b[off:], "trailing bytes", fmt.Sprintf("%d bytes", len(b)-off))
	}
}

func formatValue(as fieldFmt, v uint64) string {
	switch as {
	case asVersion:
		return Version(v).String()
	case asCode:
		return fmt.Sprintf("%d %s", v, Code(v).Name())
	case asCodec:
		return Codec(v).String()
	case asPartitionKind:
		return PartitionKind(v).String()
	case asErrorFlags:
		var parts []string
		if v&uint64(ErrorRetryable) != 0 {
			parts = append(parts, "retryable")
		}
		if v&uint64(ErrorFatal) != 0 {
			parts = append(parts, "fatal")
		}
		if len(parts) == 0 {
			return "0"
		}
		return strings.Join(parts, "|")
	case asRegionFlags:
		if v == uint64(RegionFlagBroadcast) {
			return "broadcast"
		}
		return fmt.Sprintf("%#02x", v)
	case asHex:
		return fmt.Sprintf("%#08x", v)
	}
	return strconv.FormatUint(v, 10)
}

func formatBytes(as fieldFmt, b []byte) string {
	if as == asHex || !utf8.Valid(b) {
		if len(b) > 16 {
			return fmt.Sprintf("%d bytes: %x…", len(b), b[:16])
		}
		return fmt.Sprintf("%x", b)
	}
	if len(b) > 40 {
		return fmt.Sprintf("%d bytes: %q…", len(b), b[:40])
	}
	return strconv.Quote(string(b))
}

// stored describes the stored bytes of a data frame.
func (d *describer) stored(b []byte, base int, t Type) {
	for off, i := 0, 0; off < len(b); i++ {
		segment := b[off] == 'S'
		if t == TypeWriteData {
			segment = false
		} else if t == TypePushData {
			segment = true
		}
		it, err := NextStored(b[off:], segment)
		what := "buffer"
		if segment {
			what = "segment"
		}
		if err != nil {
			fmt.Fprintf(d, "%8d  %s %d: %v\n", base+off, what, i, err)
			return
		}
		hs := BufferHeaderSize
		fmt.Fprintf(d, "%8d  %s %d (%d bytes)\n", base+off, what, i, it.Size)
		h := b[off:]
		d.line(base+off, h[0:1], "  kind", strconv.QuoteRune(rune(h[0])))
		d.line(base+off+1, h[1:2], "  codec", it.Codec().String())
		flags := BufferFlags(binary.LittleEndian.Uint16(h[2:]))
		fl := "0"
		if flags == FlagRawFallback {
			fl = "raw-fallback"
		}
		d.line(base+off+2, h[2:4], "  flags", fl)
		p := 4
		if segment {
			hs = SegmentHeaderSize
			for _, name := range []string{"map", "attempt", "seq"} {
				d.line(base+off+p, h[p:p+4], "  "+name, strconv.FormatUint(uint64(binary.LittleEndian.Uint32(h[p:])), 10))
				p += 4
			}
		} else {
			sub := binary.LittleEndian.Uint32(h[p:])
			v := strconv.FormatUint(uint64(sub), 10)
			if sub == AllSubpartitions {
				v = "all (broadcast)"
			}
			d.line(base+off+p, h[p:p+4], "  subpartition", v)
			p += 4
		}
		d.line(base+off+p, h[p:p+4], "  payload length", strconv.FormatUint(uint64(binary.LittleEndian.Uint32(h[p:])), 10))
		d.line(base+off+p+4, h[p+4:p+8], "  uncompressed length", strconv.FormatUint(uint64(binary.LittleEndian.Uint32(h[p+4:])), 10))
		d.line(base+off+p+8, h[p+8:p+12], "  payload CRC32C", fmt.Sprintf("%#08x (ok)", binary.LittleEndian.Uint32(h[p+8:])))
		d.line(base+off+p+12, h[p+12:p+16], "  header CRC32C", fmt.Sprintf("%#08x (ok)", binary.LittleEndian.Uint32(h[p+12:])))
		if len(it.Payload) > 0 {
			d.line(base+off+hs, it.Payload, "  payload", fmt.Sprintf("%d bytes", len(it.Payload)))
		}
		d.records(&it)
		off += it.Size
	}
}

// records lists the records of a stored item's payload.
func (d *describer) records(it *StoredItem) {
	data := it.Payload
	if it.Codec() == CodecLZ4 {
		n := int(it.UncompressedLength())
		// An LZ4 block expands at most about 255 times (a match token
		// with 255-byte length extensions); a larger claim is not worth
		// allocating for.
		if n > 256*len(it.Payload)+64 {
			fmt.Fprintf(d, "            LZ4 payload of %d bytes cannot decode to %d bytes\n", len(it.Payload), n)
			return
		}
		data = make([]byte, n)
		if got, err := lz4.UncompressBlock(it.Payload, data); err != nil || got != n {
			fmt.Fprintf(d, "            LZ4 payload does not decode to %d bytes (%d, %v)\n", n, got, err)
			return
		}
	}
	for off, i := 0, 0; off < len(data); i++ {
		frag, more, size, err := ParseFragment(data[off:])
		if err != nil {
			fmt.Fprintf(d, "            record framing at uncompressed offset %d: %v\n", off, err)
			return
		}
		kind := "record"
		if more {
			kind = "fragment (continues)"
		}
		shown := frag
		if len(shown) > 40 {
			shown = shown[:40]
		}
		text := strconv.Quote(string(shown))
		if !utf8.Valid(shown) {
			text = fmt.Sprintf("%x", shown)
		}
		if len(shown) < len(frag) {
			text += "…"
		}
		fmt.Fprintf(d, "            entry %d at uncompressed offset %d: %s of %d bytes: %s\n", i, off, kind, len(frag), text)
		off += size
	}
}
