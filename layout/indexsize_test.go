package layout

import (
	"bytes"
	"fmt"
	"os"
	"strings"
	"testing"
)

// indexSizeCase is one distribution of data over 10,000 subpartitions and
// 100 regions, for FORMAT.md's table of index sizes.
type indexSizeCase struct {
	name    string
	present func(region, sub uint32) bool
}

const (
	sizeSubs    = 10000
	sizeRegions = 100
)

var indexSizeCases = []indexSizeCase{
	{"dense: every subpartition in every region", func(r, s uint32) bool { return true }},
	{"half: every other subpartition", func(r, s uint32) bool { return (s+r)%2 == 0 }},
	{"sparse 10%: 1,000 subpartitions per region", func(r, s uint32) bool { return (s+r)%10 == 0 }},
	{"sparse 1%: 100 subpartitions per region", func(r, s uint32) bool { return (s+r)%100 == 0 }},
	{"one subpartition per region", func(r, s uint32) bool { return s == (r*97)%sizeSubs }},
}

// indexSizes builds the index and directory of a MapPartition for c (the
// buffers' bytes are not needed, only their headers) and returns the index
// bytes, the directory bytes, and the most bytes one lookup of a range
// reads: two index blocks.
func indexSizes(t testing.TB, c indexSizeCase) (index, dir uint64, blocks int) {
	b, err := NewMapBuilder(&MapHeader{Job: []byte("j"), Dataset: []byte("d"), SubpartitionCount: sizeSubs})
	must(t, err)
	_, err = b.AppendHeader(nil)
	must(t, err)
	var scratch []byte
	h := BufferHeader{PayloadLength: 1000, UncompressedLength: 1000}
	for r := range uint32(sizeRegions) {
		must(t, b.StartRegion(false))
		for s := range uint32(sizeSubs) {
			if c.present(r, s) {
				h.Subpartition = s
				_, err := b.AddBuffer(nil, &h)
				must(t, err)
			}
		}
		scratch, err = b.FinishRegion(scratch[:0])
		must(t, err)
	}
	_, f, err := b.Finish(nil)
	must(t, err)
	return f.IndexBytes, uint64(f.DirectoryLength), len(b.blocks)
}

func group(n uint64) string {
	s := fmt.Sprint(n)
	var out []byte
	for i := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			out = append(out, ',')
		}
		out = append(out, s[i])
	}
	return string(out)
}

// indexSizeTable is the table FORMAT.md carries between its markers.
func indexSizeTable(t testing.TB) string {
	var b strings.Builder
	b.WriteString("| distribution (10,000 subpartitions × 100 regions) | index blocks | index bytes | directory bytes | bytes per (region, subpartition) |\n")
	b.WriteString("| --- | ---: | ---: | ---: | ---: |\n")
	for _, c := range indexSizeCases {
		index, dir, blocks := indexSizes(t, c)
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %.3f |\n", c.name, group(uint64(blocks)), group(index), group(dir),
			float64(index+dir)/(sizeSubs*sizeRegions))
	}
	return b.String()
}

const (
	sizeTableBegin = "<!-- index-sizes: go test ./layout -update regenerates this table -->\n"
	sizeTableEnd   = "<!-- /index-sizes -->\n"
)

// TestIndexSizesInFormatDoc computes the index sizes FORMAT.md states and
// checks the document says the same.
func TestIndexSizesInFormatDoc(t *testing.T) {
	if testing.Short() {
		t.Skip("builds 100 regions of 10,000 subpartitions")
	}
	doc, err := os.ReadFile("FORMAT.md")
	must(t, err)
	i, j := bytes.Index(doc, []byte(sizeTableBegin)), bytes.Index(doc, []byte(sizeTableEnd))
	if i < 0 || j < i {
		t.Fatalf("FORMAT.md lacks the markers %q and %q", sizeTableBegin, sizeTableEnd)
	}
	table := indexSizeTable(t)
	got := string(doc[i+len(sizeTableBegin) : j])
	if *updateDescribe {
		doc = append(append(append([]byte(nil), doc[:i+len(sizeTableBegin)]...), table...), doc[j:]...)
		must(t, os.WriteFile("FORMAT.md", doc, 0o644))
		got = table
	}
	if got != table {
		t.Errorf("FORMAT.md's index size table is stale (go test ./layout -update rewrites it); computed:\n%s", table)
	}
	t.Logf("\n%s", table)
}
