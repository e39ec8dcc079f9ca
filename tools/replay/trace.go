// Package replay is the trace format of recorded shuffle shapes (FORMAT.md)
// benchmarks: a trace (FORMAT.md) says which jobs write which datasets,
// how many bytes each producer writes to each subpartition, and when
// producers and consumers arrive; Run writes and reads exactly that through
// the Go client against a cluster (in-process local mode or a running one)
// and reports throughput, latency percentiles, seeks and modeled HDD time,
// with an SVG chart of throughput over time (WriteSVG).
package replay

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
)

// Version is the trace format version this package reads and writes.
const Version = 1

// Limits on what a trace may declare, so that a decoder never allocates
// from an unchecked count.
const (
	MaxDatasets      = 10_000
	MaxProducers     = 100_000
	MaxSubpartitions = 100_000
	MaxCells         = 10_000_000 // producers × subpartitions of one dataset
	MaxLineBytes     = 16 << 20
)

// ErrTrace is the error of every malformed trace.
var ErrTrace = errors.New("replay: bad trace")

// Trace is one recorded workload.
type Trace struct {
	Name        string
	Description string
	Datasets    []*Dataset
}

// Dataset is one shuffle of a job.
type Dataset struct {
	Job, ID       string
	Kind          string // "map" (MapPartitions) or "reduce" (ReducePartitions)
	Subpartitions uint32
	Producers     []Producer
	Consumers     []Consumer
}

// Producer is one map task: when it starts and what it writes.
type Producer struct {
	Index   uint32
	StartMs int64
	// Bytes[s] is what it writes to subpartition s (len = Subpartitions).
	Bytes []int64
}

// Consumer is one reduce task: when it arrives and the subpartition range
// it reads. It reads once every producer of its dataset has committed
// (a blocking shuffle), and not before StartMs.
type Consumer struct {
	Start, End uint32 // [Start, End)
	StartMs    int64
}

// TotalBytes is what the dataset's producers write.
func (d *Dataset) TotalBytes() int64 {
	var n int64
	for _, p := range d.Producers {
		for _, b := range p.Bytes {
			n += b
		}
	}
	return n
}

// The JSON lines of the format, one struct per line kind.
type headerLine struct {
	Trace       string `json:"trace"`
	Version     int    `json:"version"`
	Description string `json:"description,omitempty"`
}

type datasetLine struct {
	Dataset       string `json:"dataset"`
	Job           string `json:"job"`
	Kind          string `json:"kind"`
	Producers     int    `json:"producers"`
	Subpartitions int    `json:"subpartitions"`
}

type producerLine struct {
	Dataset  string  `json:"dataset"`
	Producer *int    `json:"producer"`
	StartMs  int64   `json:"start_ms"`
	Bytes    []int64 `json:"bytes"`
}

type consumerLine struct {
	Dataset  string `json:"dataset"`
	Consumer []int  `json:"consumer"`
	StartMs  int64  `json:"start_ms"`
}

// Decode reads a trace and checks it whole: every dataset declared before
// its producers and consumers, every producer present once with one byte
// count per subpartition, consumers' ranges inside the dataset and
// covering every subpartition, no negative size or time.
func Decode(r io.Reader) (*Trace, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), MaxLineBytes)
	bad := func(line int, format string, args ...any) error {
		return fmt.Errorf("%w: line %d: %s", ErrTrace, line, fmt.Sprintf(format, args...))
	}
	t := &Trace{}
	byID := map[string]*Dataset{}
	seen := map[*Dataset][]bool{} // producers seen
	cells := 0
	line := 0
	for sc.Scan() {
		line++
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		var probe map[string]json.RawMessage
		if err := json.Unmarshal([]byte(text), &probe); err != nil {
			return nil, bad(line, "not a JSON object: %v", err)
		}
		if t.Name == "" {
			if _, ok := probe["trace"]; !ok {
				return nil, bad(line, `the first line must be the header {"trace": NAME, "version": %d}`, Version)
			}
		}
		dec := func(v any) error {
			d := json.NewDecoder(strings.NewReader(text))
			d.DisallowUnknownFields()
			if err := d.Decode(v); err != nil {
				return bad(line, "%v", err)
			}
			return nil
		}
		switch {
		case probe["trace"] != nil:
			var h headerLine
			if err := dec(&h); err != nil {
				return nil, err
			}
			if t.Name != "" {
				return nil, bad(line, "a second header")
			}
			if h.Version != Version {
				return nil, bad(line, "format version %d; this Sluice reads version %d", h.Version, Version)
			}
			if h.Trace == "" {
				return nil, bad(line, "the trace has no name")
			}
			t.Name, t.Description = h.Trace, h.Description
		case probe["kind"] != nil:
			var l datasetLine
			if err := dec(&l); err != nil {
				return nil, err
			}
			switch {
			case l.Dataset == "" || l.Job == "" || len(l.Dataset) > 255 || len(l.Job) > 255:
				return nil, bad(line, "dataset and job ids must have 1 to 255 bytes")
			case byID[l.Dataset] != nil:
				return nil, bad(line, "dataset %q declared twice (dataset ids are unique in a trace)", l.Dataset)
			case l.Kind != "map" && l.Kind != "reduce":
				return nil, bad(line, "kind %q is neither map nor reduce", l.Kind)
			case l.Producers < 1 || l.Producers > MaxProducers:
				return nil, bad(line, "%d producers, want 1 to %d", l.Producers, MaxProducers)
			case l.Subpartitions < 1 || l.Subpartitions > MaxSubpartitions:
				return nil, bad(line, "%d subpartitions, want 1 to %d", l.Subpartitions, MaxSubpartitions)
			case len(t.Datasets) == MaxDatasets:
				return nil, bad(line, "more than %d datasets", MaxDatasets)
			case l.Producers*l.Subpartitions > MaxCells || cells+l.Producers*l.Subpartitions > 4*MaxCells:
				return nil, bad(line, "%d producers x %d subpartitions is too many", l.Producers, l.Subpartitions)
			}
			cells += l.Producers * l.Subpartitions
			d := &Dataset{Job: l.Job, ID: l.Dataset, Kind: l.Kind, Subpartitions: uint32(l.Subpartitions),
				Producers: make([]Producer, l.Producers)}
			byID[l.Dataset] = d
			seen[d] = make([]bool, l.Producers)
			t.Datasets = append(t.Datasets, d)
		case probe["producer"] != nil:
			var l producerLine
			if err := dec(&l); err != nil {
				return nil, err
			}
			d := byID[l.Dataset]
			switch {
			case d == nil:
				return nil, bad(line, "producer of undeclared dataset %q", l.Dataset)
			case l.Producer == nil:
				return nil, bad(line, "producer without an index")
			case *l.Producer < 0 || *l.Producer >= len(d.Producers):
				return nil, bad(line, "producer %d of a dataset of %d", *l.Producer, len(d.Producers))
			case seen[d][*l.Producer]:
				return nil, bad(line, "producer %d of %q given twice", *l.Producer, l.Dataset)
			case len(l.Bytes) != int(d.Subpartitions):
				return nil, bad(line, "producer %d has %d byte counts for %d subpartitions", *l.Producer, len(l.Bytes), d.Subpartitions)
			case l.StartMs < 0:
				return nil, bad(line, "negative start time")
			}
			for s, b := range l.Bytes {
				if b < 0 || b > 1<<40 {
					return nil, bad(line, "producer %d writes %d bytes to subpartition %d", *l.Producer, b, s)
				}
			}
			seen[d][*l.Producer] = true
			d.Producers[*l.Producer] = Producer{Index: uint32(*l.Producer), StartMs: l.StartMs, Bytes: l.Bytes}
		case probe["consumer"] != nil:
			var l consumerLine
			if err := dec(&l); err != nil {
				return nil, err
			}
			d := byID[l.Dataset]
			switch {
			case d == nil:
				return nil, bad(line, "consumer of undeclared dataset %q", l.Dataset)
			case len(l.Consumer) != 2 || l.Consumer[0] < 0 || l.Consumer[0] >= l.Consumer[1] || l.Consumer[1] > int(d.Subpartitions):
				return nil, bad(line, "consumer range %v is not [start, end) inside %d subpartitions", l.Consumer, d.Subpartitions)
			case l.StartMs < 0:
				return nil, bad(line, "negative start time")
			case len(d.Consumers) >= int(d.Subpartitions):
				return nil, bad(line, "more consumers than subpartitions in %q", l.Dataset)
			}
			d.Consumers = append(d.Consumers, Consumer{Start: uint32(l.Consumer[0]), End: uint32(l.Consumer[1]), StartMs: l.StartMs})
		default:
			return nil, bad(line, "a line that is neither header, dataset, producer nor consumer")
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%w: line %d: %w", ErrTrace, line+1, err)
	}
	if t.Name == "" {
		return nil, fmt.Errorf("%w: empty", ErrTrace)
	}
	if len(t.Datasets) == 0 {
		return nil, fmt.Errorf("%w: no dataset", ErrTrace)
	}
	for _, d := range t.Datasets {
		for i, ok := range seen[d] {
			if !ok {
				return nil, fmt.Errorf("%w: dataset %q: producer %d missing", ErrTrace, d.ID, i)
			}
		}
		covered := make([]bool, d.Subpartitions)
		for _, c := range d.Consumers {
			for s := c.Start; s < c.End; s++ {
				if covered[s] {
					return nil, fmt.Errorf("%w: dataset %q: subpartition %d read by two consumers", ErrTrace, d.ID, s)
				}
				covered[s] = true
			}
		}
		for s, ok := range covered {
			if !ok {
				return nil, fmt.Errorf("%w: dataset %q: no consumer reads subpartition %d", ErrTrace, d.ID, s)
			}
		}
	}
	return t, nil
}

// Encode writes t in the format Decode reads.
func Encode(w io.Writer, t *Trace) error {
	enc := json.NewEncoder(w)
	if err := enc.Encode(headerLine{Trace: t.Name, Version: Version, Description: t.Description}); err != nil {
		return err
	}
	for _, d := range t.Datasets {
		if err := enc.Encode(datasetLine{Dataset: d.ID, Job: d.Job, Kind: d.Kind, Producers: len(d.Producers), Subpartitions: int(d.Subpartitions)}); err != nil {
			return err
		}
		for _, p := range d.Producers {
			i := int(p.Index)
			if err := enc.Encode(producerLine{Dataset: d.ID, Producer: &i, StartMs: p.StartMs, Bytes: p.Bytes}); err != nil {
				return err
			}
		}
		for _, c := range d.Consumers {
			if err := enc.Encode(consumerLine{Dataset: d.ID, Consumer: []int{int(c.Start), int(c.End)}, StartMs: c.StartMs}); err != nil {
				return err
			}
		}
	}
	return nil
}
