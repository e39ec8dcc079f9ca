package server_test

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sluice-shuffle/sluice/netsvc/transport"
	"github.com/sluice-shuffle/sluice/netsvc/wire"
	"github.com/sluice-shuffle/sluice/netsvc/worktest"
)

// procStatusKiB reads a "VmRSS:"-like field of /proc/PID/status in KiB.
func procStatusKiB(t testing.TB, pid int, field string) int64 {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}

// BenchmarkTenThousandChannelsRSS opens 10,000 read channels (2,500 on
// each of four connections) on a worker in its own process, each with
// credit and data pending, and reports the worker's resident memory and
// its excess over the pool (the target is at most 64 MiB):
//
//	go test ./netsvc/server -run '^$' -bench TenThousandChannelsRSS -benchtime 1x
func BenchmarkTenThousandChannelsRSS(b *testing.B) {
	for range b.N {
		tenThousandChannels(b)
	}
}

func tenThousandChannels(t *testing.B) {
	const pool = 64 << 20
	p := worktest.StartProcess(t, t.TempDir(), 64<<10, pool)
	setup := dial(t, p.Addr)
	s := mapSpec{job: "job", ds: "rss", subs: 100, buffers: 2, size: 4000, regions: 2}
	writeMap(t, setup, s)
	base := procStatusKiB(t, p.Cmd.Process.Pid, "VmRSS")
	const channels, conns = 10_000, 4
	var readers []*transport.ReadChannel
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	for i := range conns {
		c, err := transport.Dial(ctx, p.Addr, transport.Config{ClientID: fmt.Sprintf("%s-%d", t.Name(), i)})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		for j := range channels / conns {
			sub := uint32((i*channels/conns + j) % int(s.subs))
			r, err := transport.OpenRead(ctx, c, wire.ReadOpen{Kind: wire.PartitionMap, Index: s.mapIndex, Attempt: s.at,
				SubStart: sub, SubEnd: sub + 1, Job: []byte(s.job), Dataset: []byte(s.ds)}, 16<<10, nil)
			if err != nil {
				t.Fatalf("channel %d: %v", len(readers), err)
			}
			readers = append(readers, r)
		}
	}
	time.Sleep(time.Second) // let the worker read what the credit allows
	pid := p.Cmd.Process.Pid
	rss, hwm := procStatusKiB(t, pid, "VmRSS"), procStatusKiB(t, pid, "VmHWM")
	t.Logf("worker with %d open read channels: RSS %d MiB (%d MiB before), peak %d MiB, pool %d MiB", len(readers), rss>>10, base>>10, hwm>>10, pool>>20)
	t.ReportMetric(float64(hwm)/1024, "peak_rss_MiB")
	t.ReportMetric(float64(hwm)/1024-pool>>20, "over_pool_MiB")
	// Every channel still works: read one to its end.
	got, err := readAll(ctx, readers[len(readers)-1])
	if err != nil || len(got) == 0 {
		t.Fatalf("the last channel: %d bytes, %v", len(got), err)
	}
}
