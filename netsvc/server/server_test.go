package server_test

import (
	"testing"

	"github.com/sluice-shuffle/sluice/netsvc/worktest"
)

func TestMapWriteRead(t *testing.T) {
	w := worktest.Start(t, worktest.Config{})
	c := dial(t, w.Addr)
	s := mapSpec{job: "job", ds: "ds", mapIndex: 3, at: 1, subs: 8, buffers: 5, size: 10000}
	wc := writeMap(t, c, s)
	if wc.Buffers != 40 {
		t.Fatalf("committed %+v", wc)
	}
	for _, r := range [][2]uint32{{0, 8}, {2, 3}, {5, 8}, {0, 1}} {
		rc := openMapRead(t, c, s, r[0], r[1], 64<<10)
		got, err := readAll(ctxT(t), rc)
		if err != nil {
			t.Fatal(err)
		}
		if err := checkMapRead(s, r[0], r[1], got); err != nil {
			t.Fatal(err)
		}
		if e := rc.End(); e == nil || e.StoredBytes != uint64(len(got)) {
			t.Fatalf("READ_END %+v after %d bytes", e, len(got))
		}
	}
	waitFor(t, "channels to close", func() bool { return w.Server.Stats().Channels == 0 })
}
