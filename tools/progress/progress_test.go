package progress

import (
	"bytes"
	"os"
	"strings"
	"testing"
)

func TestBar(t *testing.T) {
	if got := Line("fsck", 512<<20, 2<<30, 1e9); !strings.Contains(got, "fsck [") || !strings.Contains(got, " 25% 512.0 MiB / 2.0 GiB  512.0 MiB/s  ETA 3s") {
		t.Errorf("progress line %q", got)
	}
	var buf bytes.Buffer
	p := New(&buf, "demo")
	p.Add(100)
	p.Start()
	p.Done(50)
	p.mu.Lock()
	p.drawLocked()
	p.mu.Unlock()
	p.Pause(func() { buf.WriteString("a result\n") })
	p.Finish()
	if s := buf.String(); !strings.Contains(s, "50%") || !strings.Contains(s, "\r\x1b[Ka result\n\r\x1b[Kdemo [") || !strings.HasSuffix(s, "\r\x1b[K") {
		t.Errorf("progress output %q", s)
	}
	// No terminal, no bar: New(nil) is a nil bar that does nothing.
	nilp := New(nil, "x")
	if nilp != nil {
		t.Fatal("New(nil) drew somewhere")
	}
	nilp.Add(1)
	nilp.Start()
	ran := false
	nilp.Pause(func() { ran = true })
	nilp.Finish()
	if !ran {
		t.Error("a nil bar's Pause did not run its function")
	}
}

func TestTerminal(t *testing.T) {
	f, err := os.CreateTemp(t.TempDir(), "notty")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if w := Terminal(f); w != nil {
		t.Fatal("a regular file was taken for a terminal")
	}
}
