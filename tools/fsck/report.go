package fsck

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"github.com/sluice-shuffle/sluice/layout"
	"github.com/sluice-shuffle/sluice/tools/progress"
)

// Reporter prints results as Check produces them, then the summary.
type Reporter interface {
	Report(*Result)
	Finish(*Summary) error
}

// TextReporter prints one line per result and a summary line.
type TextReporter struct {
	W   io.Writer
	err error
}

// Report prints r.
func (t *TextReporter) Report(r *Result) {
	if _, err := fmt.Fprintln(t.W, FormatResult(r)); err != nil && t.err == nil {
		t.err = err
	}
}

// Finish prints the summary line and returns the first write error.
func (t *TextReporter) Finish(s *Summary) error {
	if _, err := fmt.Fprintln(t.W, FormatSummary(s)); err != nil && t.err == nil {
		t.err = err
	}
	return t.err
}

// JSONReporter prints one JSON object per line: one per result, then the
// summary (whose "type" is "summary").
type JSONReporter struct {
	enc *json.Encoder
	err error
}

// NewJSONReporter returns a reporter writing to w.
func NewJSONReporter(w io.Writer) *JSONReporter {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	return &JSONReporter{enc: enc}
}

// Report prints r.
func (j *JSONReporter) Report(r *Result) {
	if err := j.enc.Encode(r); err != nil && j.err == nil {
		j.err = err
	}
}

// Finish prints the summary and returns the first write error.
func (j *JSONReporter) Finish(s *Summary) error {
	if err := j.enc.Encode(s); err != nil && j.err == nil {
		j.err = err
	}
	return j.err
}

// FormatResult is the text line of one result:
//
//	STATUS      path  [identity]: offset N: what
func FormatResult(r *Result) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%-10s  %s", r.Status, r.Path)
	if id := identityText(r); id != "" {
		b.WriteString("  " + id)
	}
	switch {
	case r.What != "":
		b.WriteString(": ")
		if r.Offset != nil {
			fmt.Fprintf(&b, "offset %d: ", *r.Offset)
		}
		b.WriteString(r.What)
		if f := r.BitFlip; f != nil {
			where := "data"
			if f.InCRC {
				where = "stored checksum"
			}
			fmt.Fprintf(&b, "; one flipped bit explains it (%s byte at offset %d, bit %d)", where, f.Offset, f.Bit)
		}
		if r.Detail != "" {
			fmt.Fprintf(&b, " (%s)", r.Detail)
		}
	case r.Detail != "":
		b.WriteString(": " + r.Detail)
	}
	if r.QuarantinedTo != "" {
		b.WriteString("; quarantined to " + r.QuarantinedTo)
	}
	if r.Released {
		b.WriteString("; released in the commit log")
	}
	if r.QuarantineError != "" {
		b.WriteString("; QUARANTINE FAILED: " + r.QuarantineError)
	}
	return b.String()
}

func identityText(r *Result) string {
	switch {
	case r.Map != nil && r.Attempt != nil:
		return fmt.Sprintf("[%s job %q dataset %q map %d attempt %d]", layout.KindMapPartition, r.Job, r.Dataset, *r.Map, *r.Attempt)
	case r.Reduce != nil:
		return fmt.Sprintf("[%s job %q dataset %q reduce %d]", layout.KindReducePartition, r.Job, r.Dataset, *r.Reduce)
	}
	return ""
}

// FormatSummary is the text line of the summary.
func FormatSummary(s *Summary) string {
	var b strings.Builder
	disks := "disks"
	if s.Disks == 1 {
		disks = "disk"
	}
	fmt.Fprintf(&b, "fsck: %d %s, %d files (%d partitions): %d OK, %d CORRUPT, %d INCOMPLETE, %d ERROR",
		s.Disks, disks, s.Files, s.Partitions, s.OK, s.Corrupt, s.Incomplete, s.Errors)
	if s.Other > 0 {
		fmt.Fprintf(&b, ", %d OTHER", s.Other)
	}
	mode := "buffered"
	if s.Direct {
		mode = "O_DIRECT"
	}
	fmt.Fprintf(&b, "; %s verified in %.2fs (%.0f MiB/s; %s, %s, %d jobs)", progress.Size(s.Bytes), s.Seconds, s.MiBs, s.Backend, mode, s.Jobs)
	if s.QuarantineDir != "" {
		fmt.Fprintf(&b, "; %d moved to %s, %d released", s.Quarantined, s.QuarantineDir, s.Released)
	}
	return b.String()
}
