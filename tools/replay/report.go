package replay

import (
	"encoding/xml"
	"fmt"
	"io"
	"strings"
)

// Latency is a distribution of durations in milliseconds.
type Latency struct {
	N                  int
	P50, P90, P99, Max float64
}

// Sample is the throughput of one sampling interval.
type Sample struct {
	T         float64 `json:"t_s"` // end of the interval, from the start
	WriteMiBs float64 `json:"write_mib_s"`
	ReadMiBs  float64 `json:"read_mib_s"`
}

// DatasetReport is one dataset's part of a replay.
type DatasetReport struct {
	ID, Kind             string
	Producers, Consumers int
	Bytes                int64 // written, and read back
}

// Report is what a replay measured.
type Report struct {
	Trace        string  `json:"trace"`
	Scale        float64 `json:"scale"`
	Seconds      float64 `json:"seconds"`
	WrittenBytes int64   `json:"written_bytes"`
	ReadBytes    int64   `json:"read_bytes"`
	// MiBs is written plus read bytes over the whole replay's time.
	MiBs float64 `json:"mib_s"`
	// Commit: a producer's start to its commit; FirstByte: a consumer's
	// start (its arrival, or its producers' last commit if later) to its
	// first record; Read: the same start to its last record.
	Commit, FirstByte, Read Latency
	// Seeks and ModelSeconds: the disk reads through the HDD model
	// (HasModel: only in-process).
	HasModel     bool    `json:"has_model"`
	Seeks        int     `json:"seeks"`
	ModelSeconds float64 `json:"model_s"`
	Datasets     []DatasetReport
	Series       []Sample `json:"series"`
}

// WriteTable prints the report as text.
func WriteTable(w io.Writer, rep *Report) {
	fmt.Fprintf(w, "trace %s (scale %g): %.1f MiB written, %.1f MiB read in %.2f s, %.1f MiB/s\n",
		rep.Trace, rep.Scale, float64(rep.WrittenBytes)/(1<<20), float64(rep.ReadBytes)/(1<<20), rep.Seconds, rep.MiBs)
	fmt.Fprintf(w, "%-16s %-7s %9s %9s %12s\n", "dataset", "kind", "producers", "consumers", "MiB")
	for _, d := range rep.Datasets {
		fmt.Fprintf(w, "%-16s %-7s %9d %9d %12.2f\n", d.ID, d.Kind, d.Producers, d.Consumers, float64(d.Bytes)/(1<<20))
	}
	fmt.Fprintf(w, "%-28s %8s %9s %9s %9s %9s\n", "latency (ms)", "n", "p50", "p90", "p99", "max")
	for _, l := range []struct {
		name string
		l    Latency
	}{{"producer start -> commit", rep.Commit}, {"consumer start -> 1st byte", rep.FirstByte}, {"consumer start -> done", rep.Read}} {
		fmt.Fprintf(w, "%-28s %8d %9.1f %9.1f %9.1f %9.1f\n", l.name, l.l.N, l.l.P50, l.l.P90, l.l.P99, l.l.Max)
	}
	if rep.HasModel {
		fmt.Fprintf(w, "disk reads: %d seeks, %.2f s on the HDD model\n", rep.Seeks, rep.ModelSeconds)
	} else {
		fmt.Fprintln(w, "disk reads: seeks and HDD model only in-process (the workers' read trace)")
	}
}

// WriteSVG draws the write and read throughput over time as a line chart.
func WriteSVG(w io.Writer, rep *Report) error {
	const (
		width, height = 800, 320
		left, right   = 60, 20
		top, bottom   = 40, 40
	)
	plotW, plotH := float64(width-left-right), float64(height-top-bottom)
	maxT, maxY := rep.Seconds, 1.0
	for _, s := range rep.Series {
		maxT = max(maxT, s.T)
		maxY = max(maxY, s.WriteMiBs, s.ReadMiBs)
	}
	if maxT <= 0 {
		maxT = 1
	}
	x := func(t float64) float64 { return float64(left) + t/maxT*plotW }
	y := func(v float64) float64 { return float64(top) + plotH - v/maxY*plotH }
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n", width, height, width, height)
	b.WriteString(`<rect width="100%" height="100%" fill="white"/>` + "\n")
	title := fmt.Sprintf("sluice replay %s (scale %g): %.1f MiB/s over %.2f s", rep.Trace, rep.Scale, rep.MiBs, rep.Seconds)
	fmt.Fprintf(&b, `<text x="%d" y="20" font-size="14">%s</text>`+"\n", left, escape(title))
	// Axes, ticks and grid.
	fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>`+"\n", left, top, left, height-bottom)
	fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>`+"\n", left, height-bottom, width-right, height-bottom)
	for i := 0; i <= 4; i++ {
		v := maxY * float64(i) / 4
		fmt.Fprintf(&b, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#ddd"/>`+"\n", left, y(v), width-right, y(v))
		fmt.Fprintf(&b, `<text x="%d" y="%.1f" text-anchor="end">%.0f</text>`+"\n", left-5, y(v)+4, v)
		t := maxT * float64(i) / 4
		fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle">%.1f s</text>`+"\n", x(t), height-bottom+16, t)
	}
	fmt.Fprintf(&b, `<text x="14" y="%d" transform="rotate(-90 14 %d)" text-anchor="middle">MiB/s</text>`+"\n", top+int(plotH)/2, top+int(plotH)/2)
	for _, line := range []struct {
		name, color string
		v           func(Sample) float64
	}{{"write", "#d62728", func(s Sample) float64 { return s.WriteMiBs }}, {"read", "#1f77b4", func(s Sample) float64 { return s.ReadMiBs }}} {
		var pts []string
		for _, s := range rep.Series {
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", x(s.T), y(line.v(s))))
		}
		if len(pts) > 0 {
			fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="1.5" points="%s"/>`+"\n", line.color, strings.Join(pts, " "))
		}
	}
	fmt.Fprintf(&b, `<text x="%d" y="%d" fill="#d62728">write</text><text x="%d" y="%d" fill="#1f77b4">read</text>`+"\n", width-right-90, top-8, width-right-40, top-8)
	b.WriteString("</svg>\n")
	_, err := io.WriteString(w, b.String())
	return err
}

func escape(s string) string {
	var b strings.Builder
	_ = xml.EscapeText(&b, []byte(s))
	return b.String()
}
