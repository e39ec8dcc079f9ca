package layout

import (
	"fmt"
	"io"
)

// VerifyOptions tune a Verifier.
type VerifyOptions struct {
	// AllowOpenReduce accepts ReducePartition files that were never
	// finalized (see ReduceVerifyOptions.AllowOpen).
	AllowOpenReduce bool
}

// Verifier checks any Sluice file streamed through Write: it tells the kind
// from the magic and hands the bytes to that kind's verifier. fsck is a loop
// of large sequential reads into one Verifier per file.
type Verifier struct {
	opts   VerifyOptions
	kind   FileKind
	head   []byte // the first bytes, until the magic is known
	w      io.Writer
	mapV   *MapVerifier
	reduce *ReduceVerifier
	log    *LogVerifier
	ident  []byte
}

// Summary is what a verified file holds; the field of its kind is set.
type Summary struct {
	Kind   FileKind
	Map    *MapSummary
	Reduce *ReduceSummary
	Disk   *DiskSummary
	Log    *LogSummary
}

// DiskSummary is a verified disk identity file.
type DiskSummary struct {
	Identity DiskIdentity
	Version  Version
}

// NewVerifier returns a verifier for one file of any kind.
func NewVerifier(opts VerifyOptions) *Verifier { return &Verifier{opts: opts} }

// identityWriter keeps the bytes of a disk identity file, which is tiny.
type identityWriter struct{ b *[]byte }

func (w identityWriter) Write(p []byte) (int, error) {
	if len(*w.b)+len(p) > MaxHeaderSize {
		return 0, corruptf(KindDiskIdentity, int64(len(*w.b)), int64(len(p)), "disk identity file larger than %d bytes", MaxHeaderSize)
	}
	*w.b = append(*w.b, p...)
	return len(p), nil
}

// Write consumes the next bytes of the file.
func (v *Verifier) Write(p []byte) (int, error) {
	if v.w == nil {
		n := min(len(p), MagicSize-len(v.head))
		v.head = append(v.head, p[:n]...)
		if len(v.head) < MagicSize {
			return len(p), nil
		}
		if err := v.start(); err != nil {
			return 0, err
		}
		if _, err := v.w.Write(v.head); err != nil {
			return 0, err
		}
		p = p[n:]
		if len(p) == 0 {
			return n, nil
		}
		m, err := v.w.Write(p)
		return n + m, err
	}
	return v.w.Write(p)
}

func (v *Verifier) start() error {
	v.kind = DetectKind(v.head)
	switch v.kind {
	case KindMapPartition:
		v.mapV = NewMapVerifier()
		v.w = v.mapV
	case KindReducePartition:
		v.reduce = NewReduceVerifier(ReduceVerifyOptions{AllowOpen: v.opts.AllowOpenReduce})
		v.w = v.reduce
	case KindCommitLog:
		v.log = NewLogVerifier()
		v.w = v.log
	case KindDiskIdentity:
		v.w = identityWriter{&v.ident}
	default:
		return corruptf(KindUnknown, 0, MagicSize, "magic %q is not a Sluice magic", v.head)
	}
	return nil
}

// Finish reports whether the bytes written form a valid file, and what it
// holds.
func (v *Verifier) Finish() (Summary, error) {
	if v.w == nil {
		return Summary{}, truncatedAt(KindUnknown, 0, int64(len(v.head)), MagicSize, "magic")
	}
	s := Summary{Kind: v.kind}
	var err error
	switch v.kind {
	case KindMapPartition:
		var m MapSummary
		m, err = v.mapV.Finish()
		s.Map = &m
	case KindReducePartition:
		var r ReduceSummary
		r, err = v.reduce.Finish()
		s.Reduce = &r
	case KindCommitLog:
		var l LogSummary
		l, err = v.log.Finish()
		s.Log = &l
	case KindDiskIdentity:
		var d DiskSummary
		d.Identity, d.Version, err = DecodeDiskIdentity(v.ident)
		s.Disk = &d
	}
	if err != nil {
		return Summary{Kind: v.kind}, err
	}
	return s, nil
}

// verifyChunk is the read size of Verify, the size fsck reads in.
const verifyChunk = 4 << 20

// Verify reads a whole file from r in large sequential reads and verifies
// it. buf is the read buffer (4 MiB is allocated when it is nil).
func Verify(r io.Reader, buf []byte, opts VerifyOptions) (Summary, error) {
	if len(buf) == 0 {
		buf = make([]byte, verifyChunk)
	}
	v := NewVerifier(opts)
	if _, err := io.CopyBuffer(struct{ io.Writer }{v}, struct{ io.Reader }{r}, buf); err != nil {
		if isFormatError(err) {
			return Summary{Kind: v.kind}, err
		}
		return Summary{Kind: v.kind}, fmt.Errorf("layout: reading %v: %w", v.kind, err)
	}
	return v.Finish()
}

// isFormatError reports whether err is about the bytes (corruption or
// version) rather than about reading them.
func isFormatError(err error) bool {
	switch err.(type) {
	case *CorruptError, *VersionError:
		return true
	}
	return false
}

// wholeHeader is the first step of a verifier's parse: it returns a copy
// of the file header at the start of b once b holds all of it (the
// header's ids alias the copy, which outlives b), or how many bytes it
// needs, or why the prefix is not one of a Sluice file.
func wholeHeader(b []byte) (hdr []byte, need int, err error) {
	if len(b) < PrefixSize {
		return nil, PrefixSize, nil
	}
	_, n, err := HeaderLength(b)
	if err != nil {
		return nil, 0, err
	}
	if len(b) < n {
		return nil, n, nil
	}
	return append([]byte(nil), b[:n]...), 0, nil
}
