package fsck

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/sluice-shuffle/sluice/layout"
)

// tail keeps the last bytes streamed by: the footer of a ReducePartition,
// to tell a finalized file whose middle is damaged from a file that was
// never finalized (both end their valid prefix early).
type tail struct {
	b [layout.ReduceFooterSize]byte
	n int
}

func (t *tail) keep(p []byte) {
	if len(p) >= len(t.b) {
		t.n = copy(t.b[:], p[len(p)-len(t.b):])
		return
	}
	old := min(t.n, len(t.b)-len(p))
	copy(t.b[:old], t.b[t.n-old:t.n])
	t.n = old + copy(t.b[old:], p)
}

// finalizedFooter reports whether the file of size bytes ends with a valid
// ReducePartition footer.
func (t *tail) finalizedFooter(size int64) bool {
	if t.n < len(t.b) {
		return false
	}
	_, err := layout.DecodeReduceFooter(t.b[:], size)
	return err == nil
}

// checkFile reads and verifies one file and decides its verdict.
func (c *checker) checkFile(ctx context.Context, rd *reader, e *entry) {
	r := &e.res
	// A ReducePartition the log says is finalized must be whole; any other
	// may be open (still receiving pushes when the worker stopped), which
	// the verifier then accepts up to a torn tail.
	allowOpen := true
	if e.disk != nil && e.disk.cat != nil && e.parsed.Kind == layout.PathReduce {
		if st := e.disk.cat.Reduces[e.parsed.Reduce]; st != nil && st.Finalized {
			allowOpen = false
		}
	}
	v := layout.NewVerifier(layout.VerifyOptions{AllowOpenReduce: allowOpen})
	var t tail
	var streamed int64
	size, err := rd.stream(ctx, e.path, func(p []byte) error {
		t.keep(p)
		_, err := v.Write(p)
		return err
	}, func(n int64) {
		streamed += n
		c.bytes.Add(n)
		c.prog.Done(n)
	})
	// The bar counts the whole file, read or not.
	c.prog.Done(r.Size - streamed)
	r.Size = size
	var ioe *ioError
	if errors.As(err, &ioe) {
		setError(r, ioe.err)
		return
	}
	sum, ferr := v.Finish()
	if err == nil {
		err = ferr
	}
	if errors.Is(err, layout.ErrVersion) {
		setError(r, err)
		return
	}
	if e.disk == nil {
		c.judgeAlone(r, &sum, err, &t)
		return
	}
	c.judgeOnDisk(e, &sum, err, &t)
}

// judgeAlone decides the verdict on a file given alone: its format only.
func (c *checker) judgeAlone(r *Result, sum *layout.Summary, err error, t *tail) {
	if sum.Kind != layout.KindUnknown {
		r.Kind = sum.Kind.String()
	}
	if r.Kind == layout.KindMapPartition.String() || r.Kind == layout.KindReducePartition.String() {
		r.Commit = CommitUnknown
	}
	if err != nil {
		setError(r, err)
		return
	}
	identityFromHeader(r, sum)
	if judgeDamage(r, layout.ParsedPath{}, sum, t) {
		return
	}
	if rs := sum.Reduce; rs != nil && !rs.Finalized {
		// Alone, an open file's torn tail cannot be told from damage, but
		// a single flipped bit is no torn write.
		var ce *layout.CorruptError
		if errors.As(rs.TailError, &ce) && ce.Flip.Found {
			r.Status = StatusCorrupt
			setCorrupt(r, ce)
			return
		}
	}
	r.Status = StatusOK
	r.Detail = describe(sum)
	if r.Commit == CommitUnknown {
		r.Detail += "; commit state unknown (a file given alone: check its disk directory for that)"
	}
}

// judgeOnDisk decides the verdict on a partition file of a disk, from its
// bytes and the disk's commit log.
func (c *checker) judgeOnDisk(e *entry, sum *layout.Summary, err error, t *tail) {
	r := &e.res
	cat := e.disk.cat
	if cat == nil {
		r.Commit = CommitUnknown
		if err != nil {
			setError(r, err)
			return
		}
		if judgeDamage(r, e.parsed, sum, t) {
			return
		}
		r.Status = StatusOK
		r.Detail = describe(sum) + "; commit state unknown (no trustworthy commit log)"
		return
	}
	committed := false
	switch e.parsed.Kind {
	case layout.PathMap:
		_, committed = cat.Maps[e.parsed.Map]
	case layout.PathReduce:
		_, committed = cat.Reduces[e.parsed.Reduce]
	}
	if !committed {
		// A producer that never committed (the worker stopped while it
		// wrote, or it failed) leaves a partial file: not damage. The
		// engine deletes it at start-up.
		r.Status, r.Commit, r.What = StatusIncomplete, CommitNone, "never committed"
		if err != nil {
			r.Detail = "its bytes: " + errText(err)
		} else {
			r.Detail = "its bytes verify: " + describe(sum)
		}
		return
	}
	r.Commit = CommitCommitted
	if err != nil {
		setError(r, err)
		return
	}
	if judgeDamage(r, e.parsed, sum, t) {
		return
	}
	switch e.parsed.Kind {
	case layout.PathMap:
		err = cat.CheckMap(e.parsed.Map, sum.Map)
	case layout.PathReduce:
		if st := cat.Reduces[e.parsed.Reduce]; !st.Finalized && sum.Reduce.Finalized {
			// The engine writes the attempt table and footer, syncs, and
			// then records the finalize: a crash in between leaves this.
			// Recovery treats the table as the tail of the open file, so
			// fsck checks what recovery will: the segments before it hold
			// every commit the log records.
			c.judgeUnrecordedFinalize(r, st, sum.Reduce)
			return
		}
		err = cat.CheckReduce(e.parsed.Reduce, sum.Reduce)
		var ce *layout.CorruptError
		if err != nil && !sum.Reduce.Finalized && errors.As(sum.Reduce.TailError, &ce) {
			// The committed data ends early: where it ends, and why, is
			// what the operator needs.
			r.Status = StatusCorrupt
			setCorrupt(r, ce)
			r.What = strings.TrimPrefix(fmt.Sprintf("%s; the commit log: %s", r.What, commitText(err, e.res.File)), "; ")
			return
		}
	}
	if err != nil {
		setError(r, err)
		if r.Status == StatusCorrupt {
			r.What = commitText(err, e.res.File)
		}
		return
	}
	r.Status = StatusOK
	r.Detail = describe(sum)
}

// judgeUnrecordedFinalize decides on a finalized ReducePartition whose
// finalize the commit log does not record.
func (c *checker) judgeUnrecordedFinalize(r *Result, st *layout.ReduceState, rs *layout.ReduceSummary) {
	err := layout.CheckCommitted(rs.Attempts, st.Commits)
	if err == nil && rs.ValidLength < st.DurableLength {
		err = fmt.Errorf("segments end at %d, commits were recorded at length %d", rs.ValidLength, st.DurableLength)
	}
	if err != nil {
		r.Status, r.What = StatusCorrupt, "finalized, the finalize not recorded, and the segments do not hold what the commit log committed: "+commitText(err, r.File)
		return
	}
	r.Status = StatusOK
	r.Detail = fmt.Sprintf("finalized, but the commit log does not record the finalize (a crash in between): its %d segments up to offset %d hold every recorded commit; recovery resumes the file from there",
		rs.Segments, rs.ValidLength)
}

// judgeDamage makes r CORRUPT, and reports so, when a file whose bytes
// verify holds another partition than its path pp names (pp of kind
// PathOther checks nothing), or is a finalized ReducePartition with damage
// the verifier took for a torn tail.
func judgeDamage(r *Result, pp layout.ParsedPath, sum *layout.Summary, t *tail) bool {
	if msg := pathMismatch(pp, sum); msg != "" {
		r.Status, r.Offset, r.What = StatusCorrupt, ptr(int64(0)), msg
		return true
	}
	if bad := finalizedButDamaged(sum, r.Size, t); bad != nil {
		r.Status = StatusCorrupt
		setCorrupt(r, bad)
		return true
	}
	return false
}

// commitText is a commit check's message without the file's path, which the
// line already shows.
func commitText(err error, rel string) string {
	var ce *layout.CorruptError
	if errors.As(err, &ce) {
		s := strings.TrimPrefix(ce.What, rel+": ")
		return strings.TrimPrefix(s, rel+" ")
	}
	return err.Error()
}

// finalizedButDamaged returns the damage in a ReducePartition that the
// verifier took for an open file with a torn tail, when the file ends with
// a valid footer: it was finalized, so nothing in it may be torn.
func finalizedButDamaged(sum *layout.Summary, size int64, t *tail) *layout.CorruptError {
	rs := sum.Reduce
	if rs == nil || rs.Finalized || rs.TailError == nil || !t.finalizedFooter(size) {
		return nil
	}
	var ce *layout.CorruptError
	if errors.As(rs.TailError, &ce) {
		return ce
	}
	return &layout.CorruptError{File: layout.KindReducePartition, Offset: rs.ValidLength, What: rs.TailError.Error()}
}

// pathMismatch checks that a partition file holds the partition its path
// names (the commit checks do this for committed files too).
func pathMismatch(pp layout.ParsedPath, sum *layout.Summary) string {
	switch pp.Kind {
	case layout.PathMap:
		if sum.Map == nil {
			return fmt.Sprintf("a %v file where a MapPartition belongs", sum.Kind)
		}
		h, k := sum.Map.Header, pp.Map
		if string(h.Job) != k.Job || string(h.Dataset) != k.Dataset || h.MapIndex != k.Map || h.Attempt != k.Attempt {
			return fmt.Sprintf("holds the partition of job %q dataset %q map %d attempt %d", h.Job, h.Dataset, h.MapIndex, h.Attempt)
		}
	case layout.PathReduce:
		if sum.Reduce == nil {
			return fmt.Sprintf("a %v file where a ReducePartition belongs", sum.Kind)
		}
		h, k := sum.Reduce.Header, pp.Reduce
		if string(h.Job) != k.Job || string(h.Dataset) != k.Dataset || h.ReduceIndex != k.Reduce {
			return fmt.Sprintf("holds the partition of job %q dataset %q reduce %d", h.Job, h.Dataset, h.ReduceIndex)
		}
	}
	return ""
}

func identityFromHeader(r *Result, sum *layout.Summary) {
	switch {
	case sum.Map != nil:
		h := sum.Map.Header
		r.Job, r.Dataset, r.Map, r.Attempt = string(h.Job), string(h.Dataset), ptr(h.MapIndex), ptr(h.Attempt)
	case sum.Reduce != nil:
		h := sum.Reduce.Header
		r.Job, r.Dataset, r.Reduce = string(h.Job), string(h.Dataset), ptr(h.ReduceIndex)
	}
}

// describe says in a few words what a verified file holds.
func describe(s *layout.Summary) string {
	switch {
	case s.Map != nil:
		m := s.Map
		return fmt.Sprintf("format %v, %d regions (%d broadcast), %d buffers, %d data bytes, %d index bytes",
			m.Version, m.Footer.Regions, m.BroadcastRegions, m.Footer.Buffers, m.Footer.DataBytes, m.Footer.IndexBytes)
	case s.Reduce != nil:
		r := s.Reduce
		if !r.Finalized {
			d := fmt.Sprintf("format %v, open (not finalized): %d segments valid up to offset %d", r.Version, r.Segments, r.ValidLength)
			if r.TailError != nil {
				d += "; ignored tail: " + errText(r.TailError)
			}
			return d
		}
		return fmt.Sprintf("format %v, finalized: %d segments (%d bytes); %d committed attempts serve %d segments (%d payload bytes)",
			r.Version, r.Footer.Segments, r.Footer.SegmentBytes, r.Footer.Entries, r.Footer.CommittedSegments, r.Footer.CommittedBytes)
	case s.Disk != nil:
		return fmt.Sprintf("format %v, disk %v, worker %v", s.Disk.Version, s.Disk.Identity.Disk, s.Disk.Identity.Worker)
	case s.Log != nil:
		l := s.Log
		return fmt.Sprintf("format %v, generation %d, %d records; %d bytes of zero padding, %d torn bytes ignored",
			l.Version, l.Header.Generation, l.End.Records, l.End.Padding, l.End.TornBytes)
	}
	return ""
}
