package replay

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestTestdataTraces: the traces in testdata decode, and are what the
// generator makes (so that regenerating them changes nothing).
func TestTestdataTraces(t *testing.T) {
	for _, shape := range Shapes {
		path := filepath.Join("..", "..", "testdata", "traces", shape+".jsonl")
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		tr, err := Decode(bytes.NewReader(data))
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		gen, err := Generate(shape, 1)
		if err != nil {
			t.Fatal(err)
		}
		var b bytes.Buffer
		if err := Encode(&b, gen); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(b.Bytes(), data) {
			t.Errorf("%s differs from `sluice replay gen --shape %s`", path, shape)
		}
		if tr.Name != shape || len(tr.Datasets) == 0 || tr.Datasets[0].TotalBytes() == 0 {
			t.Errorf("%s: %+v", path, tr)
		}
	}
	if _, err := Generate("nope", 1); err == nil {
		t.Error("an unknown shape was generated")
	}
}

func TestShapes(t *testing.T) {
	tpcds, _ := Generate("tpcds", 1)
	kinds := map[string]bool{}
	var late, ranges bool
	for _, d := range tpcds.Datasets {
		kinds[d.Kind] = true
		var sizes []int64
		for s := range d.Subpartitions {
			var n int64
			for _, p := range d.Producers {
				n += p.Bytes[s]
			}
			sizes = append(sizes, n)
		}
		lo, hi := sizes[0], sizes[0]
		for _, n := range sizes {
			lo, hi = min(lo, n), max(hi, n)
		}
		if hi < 4*lo {
			t.Errorf("tpcds %s: subpartition sizes %d..%d are not skewed", d.ID, lo, hi)
		}
		for _, c := range d.Consumers {
			late = late || c.StartMs > 1000
			ranges = ranges || c.End-c.Start > 1
		}
	}
	if !kinds["map"] || !kinds["reduce"] || !late || !ranges {
		t.Errorf("tpcds: kinds %v, late consumers %v, range consumers %v", kinds, late, ranges)
	}
	tiny, _ := Generate("tiny", 1)
	empty, cells := 0, 0
	for _, d := range tiny.Datasets {
		for _, p := range d.Producers {
			for _, b := range p.Bytes {
				cells++
				if b == 0 {
					empty++
				}
				if b > 2<<10 {
					t.Fatalf("tiny: a cell of %d bytes", b)
				}
			}
		}
	}
	if empty < cells/5 || cells < 20000 {
		t.Errorf("tiny: %d of %d cells empty", empty, cells)
	}
}

func TestDecodeErrors(t *testing.T) {
	const (
		head = `{"trace":"t","version":1}` + "\n"
		ds   = `{"dataset":"d","job":"j","kind":"map","producers":1,"subpartitions":2}` + "\n"
		prod = `{"dataset":"d","producer":0,"start_ms":0,"bytes":[1,2]}` + "\n"
		cons = `{"dataset":"d","consumer":[0,2],"start_ms":0}` + "\n"
	)
	if _, err := Decode(strings.NewReader(head + ds + prod + cons)); err != nil {
		t.Fatalf("a good trace: %v", err)
	}
	for _, tc := range []struct{ name, in, want string }{
		{"empty", "", "empty"},
		{"no header", ds + prod + cons, "first line must be the header"},
		{"newer version", `{"trace":"t","version":2}` + "\n" + ds + prod + cons, "format version 2"},
		{"two headers", head + head, "a second header"},
		{"not JSON", head + "{\n", "not a JSON object"},
		{"unknown field", head + `{"dataset":"d","job":"j","kind":"map","producers":1,"subpartitions":2,"color":1}` + "\n", "unknown field"},
		{"bad kind", head + `{"dataset":"d","job":"j","kind":"sort","producers":1,"subpartitions":2}` + "\n", "neither map nor reduce"},
		{"huge", head + `{"dataset":"d","job":"j","kind":"map","producers":100000,"subpartitions":100000}` + "\n", "too many"},
		{"zero producers", head + `{"dataset":"d","job":"j","kind":"map","producers":0,"subpartitions":2}` + "\n", "0 producers"},
		{"twice", head + ds + ds, "declared twice"},
		{"undeclared", head + prod, "undeclared dataset"},
		{"null producer", head + ds + `{"dataset":"d","producer":null,"bytes":[1,2]}` + "\n", "without an index"},
		{"producer out of range", head + ds + `{"dataset":"d","producer":1,"bytes":[1,2]}` + "\n", "producer 1 of a dataset of 1"},
		{"short bytes", head + ds + `{"dataset":"d","producer":0,"bytes":[1]}` + "\n", "1 byte counts for 2"},
		{"negative bytes", head + ds + `{"dataset":"d","producer":0,"bytes":[1,-2]}` + "\n", "-2 bytes"},
		{"negative time", head + ds + `{"dataset":"d","producer":0,"start_ms":-1,"bytes":[1,2]}` + "\n", "negative start"},
		{"producer twice", head + ds + prod + prod, "given twice"},
		{"missing producer", head + ds + cons, "producer 0 missing"},
		{"bad range", head + ds + prod + `{"dataset":"d","consumer":[1,1]}` + "\n", "is not [start, end)"},
		{"range outside", head + ds + prod + `{"dataset":"d","consumer":[0,3]}` + "\n", "is not [start, end)"},
		{"uncovered", head + ds + prod + `{"dataset":"d","consumer":[0,1]}` + "\n", "no consumer reads subpartition 1"},
		{"overlap", head + ds + prod + `{"dataset":"d","consumer":[0,2]}` + "\n" + `{"dataset":"d","consumer":[1,2]}` + "\n", "read by two consumers"},
		{"unknown line", head + `{"color":1}` + "\n", "neither header, dataset, producer nor consumer"},
		{"no dataset", head, "no dataset"},
	} {
		_, err := Decode(strings.NewReader(tc.in))
		if !errors.Is(err, ErrTrace) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want ErrTrace with %q", tc.name, err, tc.want)
		}
	}
}

func TestReportOutputs(t *testing.T) {
	rep := &Report{Trace: "a<b&c", Scale: 1, Seconds: 2, WrittenBytes: 1 << 20, ReadBytes: 1 << 20, MiBs: 1,
		Series:   []Sample{{T: 0.1, WriteMiBs: 5}, {T: 0.2, ReadMiBs: 7}},
		Datasets: []DatasetReport{{ID: "d", Kind: "map", Producers: 1, Consumers: 2, Bytes: 1 << 20}}}
	var svg bytes.Buffer
	if err := WriteSVG(&svg, rep); err != nil {
		t.Fatal(err)
	}
	if err := checkXML(svg.Bytes()); err != nil {
		t.Fatalf("the SVG is not well-formed: %v\n%s", err, svg.String())
	}
	if !strings.Contains(svg.String(), "a&lt;b&amp;c") || strings.Count(svg.String(), "<polyline") != 2 {
		t.Errorf("svg:\n%s", svg.String())
	}
	var table bytes.Buffer
	WriteTable(&table, rep)
	for _, want := range []string{"trace a<b&c", "producer start -> commit", "seeks and HDD model only in-process"} {
		if !strings.Contains(table.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, table.String())
		}
	}
}

func FuzzDecode(f *testing.F) {
	// Small seeds: the fuzzer mutates them fast (a whole testdata trace
	// costs it milliseconds per run); TestTestdataTraces decodes those.
	f.Add([]byte(`{"trace":"example","version":1,"description":"two producers, three subpartitions"}
{"dataset":"d1","job":"j1","kind":"map","producers":2,"subpartitions":3}
{"dataset":"d1","producer":0,"start_ms":0,"bytes":[1000,0,250]}
{"dataset":"d1","producer":1,"start_ms":20,"bytes":[10,20,30]}
{"dataset":"d1","consumer":[0,2],"start_ms":0}
{"dataset":"d1","consumer":[2,3],"start_ms":500}
`))
	f.Add([]byte(`{"trace":"t","version":1}` + "\n" + `{"dataset":"d","job":"j","kind":"map","producers":1,"subpartitions":2}` + "\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		tr, err := Decode(bytes.NewReader(data))
		if err != nil {
			if !errors.Is(err, ErrTrace) {
				t.Fatalf("an error that is not ErrTrace: %v", err)
			}
			return
		}
		// A decoded trace encodes and decodes to itself.
		var b bytes.Buffer
		if err := Encode(&b, tr); err != nil {
			t.Fatal(err)
		}
		again, err := Decode(&b)
		if err != nil {
			t.Fatalf("re-decoding: %v", err)
		}
		if len(again.Datasets) != len(tr.Datasets) || again.Datasets[0].TotalBytes() != tr.Datasets[0].TotalBytes() {
			t.Fatal("the round trip changed the trace")
		}
	})
}
