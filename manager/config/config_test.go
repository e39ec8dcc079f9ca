package config

import (
	"flag"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

type settings struct {
	Listen   string        `yaml:"listen" help:"address"`
	Etcd     []string      `yaml:"etcd-endpoints" help:"etcd"`
	Interval time.Duration `yaml:"interval"`
	Reserve  Bytes         `yaml:"reserve"`
	Verbose  bool          `yaml:"verbose"`
	Count    int           `yaml:"count"`
	Ratio    float64       `yaml:"ratio"`
}

func defaults() settings {
	return settings{Listen: ":1", Interval: 2 * time.Second, Reserve: 5 << 30, Count: 3}
}

func TestPrecedence(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "c.yaml")
	if err := os.WriteFile(path, []byte("listen: :2\ninterval: 3s\nreserve: 1GiB\netcd-endpoints: [a:1, b:2]\ncount: 7\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("TEST_INTERVAL", "4s")
	t.Setenv("TEST_COUNT", "8")
	s := defaults()
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	f := Bind(fs, "TEST", &s)
	if err := fs.Parse([]string{"--count", "9", "--verbose"}); err != nil {
		t.Fatal(err)
	}
	if err := f.Load(path); err != nil {
		t.Fatal(err)
	}
	want := settings{Listen: ":2", Etcd: []string{"a:1", "b:2"}, Interval: 4 * time.Second, Reserve: 1 << 30, Verbose: true, Count: 9}
	if !reflect.DeepEqual(s, want) {
		t.Fatalf("got %+v\nwant %+v", s, want)
	}
}

func TestUnknownKeys(t *testing.T) {
	s := defaults()
	err := DecodeYAML("m.yaml", []byte("listen: :2\nlistn: :3\nheartbeat: 1s\n"), &s)
	if err == nil {
		t.Fatal("no error for unknown keys")
	}
	for _, w := range []string{`"listn" (line 2)`, `"heartbeat" (line 3)`, "m.yaml", "known keys: count, etcd-endpoints"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("%q lacks %q", err, w)
		}
	}
}

func TestBadValues(t *testing.T) {
	for _, doc := range []string{"interval: soon\n", "reserve: lots\n", "count: many\n", "- a\n"} {
		s := defaults()
		if err := DecodeYAML("m.yaml", []byte(doc), &s); err == nil {
			t.Errorf("%q: no error", doc)
		}
	}
	s := defaults()
	if err := DecodeYAML("m.yaml", []byte("etcd-endpoints: a:1,b:2\n"), &s); err != nil || len(s.Etcd) != 2 {
		t.Fatalf("comma list: %v %v", err, s.Etcd)
	}
	if err := DecodeYAML("m.yaml", nil, &s); err != nil {
		t.Fatalf("empty file: %v", err)
	}
}

func TestBytes(t *testing.T) {
	for in, want := range map[string]Bytes{"4096": 4096, "64MiB": 64 << 20, "5 GiB": 5 << 30, "1.5G": 3 << 29, "2KB": 2000, "1T": 1 << 40} {
		got, err := ParseBytes(in)
		if err != nil || got != want {
			t.Errorf("ParseBytes(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "x", "-1", "99999999999999999999TiB", "NaN", "nanGiB", "Inf", "-0.5K"} {
		if _, err := ParseBytes(in); err == nil {
			t.Errorf("ParseBytes(%q): no error", in)
		}
	}
	if s := Bytes(64 << 20).String(); s != "64MiB" {
		t.Errorf("String = %q", s)
	}
}

func TestHelpAndDump(t *testing.T) {
	s := defaults()
	s.Etcd = []string{"e:1", "e:2"}
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	Bind(fs, "TEST", &s)
	var usage strings.Builder
	fs.SetOutput(&usage)
	fs.PrintDefaults()
	if !strings.Contains(usage.String(), "$TEST_ETCD_ENDPOINTS") || !strings.Contains(usage.String(), "5GiB") {
		t.Fatalf("help lacks env name or default:\n%s", usage.String())
	}
	out, err := Dump(&s)
	if err != nil {
		t.Fatal(err)
	}
	back := settings{}
	if err := DecodeYAML("dump", out, &back); err != nil {
		t.Fatalf("dump does not load back: %v\n%s", err, out)
	}
	if !reflect.DeepEqual(back, s) {
		t.Fatalf("round trip: %+v != %+v\n%s", back, s, out)
	}
}

func TestBytesIsAFlagValue(t *testing.T) {
	var b Bytes
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	fs.Var(&b, "size", "")
	if err := fs.Parse([]string{"--size", "2GiB"}); err != nil || b != 2<<30 {
		t.Fatalf("--size 2GiB: %v, %d", err, b)
	}
	if err := fs.Parse([]string{"--size", "lots"}); err == nil {
		t.Fatal("--size lots accepted")
	}
}

// TestInline: an inline struct's keys are keys of the outer settings, in
// files, variables, flags and dumps alike.
func TestInline(t *testing.T) {
	type outer struct {
		Inner settings `yaml:",inline"`
		Extra int      `yaml:"extra"`
	}
	s := outer{Inner: defaults(), Extra: 1}
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	f := Bind(fs, "TEST", &s)
	t.Setenv("TEST_EXTRA", "5")
	if err := fs.Parse([]string{"--count", "9"}); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(path, []byte("listen: :2\nextra: 4\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := f.Load(path); err != nil {
		t.Fatal(err)
	}
	if s.Inner.Listen != ":2" || s.Inner.Count != 9 || s.Extra != 5 {
		t.Fatalf("got %+v", s)
	}
	if err := DecodeYAML("c.yaml", []byte("inner: {}\n"), &s); err == nil || !strings.Contains(err.Error(), `"inner"`) {
		t.Fatalf("the inline field's own name is a key: %v", err)
	}
	out, err := Dump(&s)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(out), "listen: :2") || !strings.Contains(string(out), "extra: 5") {
		t.Fatalf("dump:\n%s", out)
	}
}
