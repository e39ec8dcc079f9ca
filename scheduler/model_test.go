package scheduler

import (
	"math"
	"testing"
	"time"
)

func TestHDDModelByHand(t *testing.T) {
	// A disk easy to compute with: 6000 rpm (10 ms a turn, 5 ms average
	// rotation), 100 MB/s, seeks from 1 ms to a 9 ms average over a 1 GB
	// stroke, so SeekFull = 1 + 8*15/8 = 16 ms.
	m := HDD{RPM: 6000, SeekMin: time.Millisecond, SeekAvg: 9 * time.Millisecond, TransferBytesPerSecond: 100e6, CapacityBytes: 1e9}
	if got := m.SeekFull(); got != 16*time.Millisecond {
		t.Fatalf("full stroke %v, want 16ms", got)
	}
	if got := m.RotationTime(); got != 5*time.Millisecond {
		t.Fatalf("rotation %v, want 5ms", got)
	}
	seg := func(pos, n int64) []TraceSegment { return []TraceSegment{{Physical: pos, Length: n}} }
	cases := []struct {
		name  string
		reads []TraceRead
		time  time.Duration
		seeks int
	}{
		{"nothing", nil, 0, 0},
		{
			// An average seek and a half turn to get anywhere, then 1 MB at
			// 100 MB/s.
			"one read", []TraceRead{{Segments: seg(0, 1e6)}},
			9*time.Millisecond + 5*time.Millisecond + 10*time.Millisecond, 1,
		},
		{
			"sequential reads cost their transfer only",
			[]TraceRead{{Segments: seg(0, 1e6)}, {Segments: seg(1e6, 1e6)}, {Segments: seg(2e6, 2e6)}},
			14*time.Millisecond + 40*time.Millisecond, 1,
		},
		{
			// Second read 250 MB further: sqrt(1/4) of the stroke, 1 +
			// 15*0.5 = 8.5 ms, plus 5 ms of rotation, plus 10 ms.
			"a quarter stroke",
			[]TraceRead{{Segments: seg(0, 1e6)}, {Segments: seg(251e6, 1e6)}},
			24*time.Millisecond + 8500*time.Microsecond + 5*time.Millisecond + 10*time.Millisecond, 2,
		},
		{
			// Backwards the same distance costs the same.
			"backwards",
			[]TraceRead{{Segments: seg(500e6, 1e6)}, {Segments: seg(251e6, 1e6)}},
			24*time.Millisecond + 8500*time.Microsecond + 5*time.Millisecond + 10*time.Millisecond, 2,
		},
		{
			// Beyond the stroke the seek is a full stroke.
			"past the stroke",
			[]TraceRead{{Segments: seg(0, 0)}, {Segments: seg(5e9, 0)}},
			14*time.Millisecond + 16*time.Millisecond + 5*time.Millisecond, 2,
		},
		{
			// A read over two extents of a fragmented file seeks inside.
			"fragmented read",
			[]TraceRead{{Segments: []TraceSegment{{Physical: 0, Length: 1e6}, {Physical: 1e6 + 1, Length: 1e6}}}},
			14*time.Millisecond + 10*time.Millisecond + m.SeekTime(1) + 5*time.Millisecond + 10*time.Millisecond, 2,
		},
	}
	for _, c := range cases {
		res := m.Replay(c.reads)
		if diff := res.Time - c.time; diff < -time.Microsecond || diff > time.Microsecond || res.Seeks != c.seeks {
			t.Errorf("%s: %v and %d seeks, want %v and %d", c.name, res.Time, res.Seeks, c.time, c.seeks)
		}
	}
	// The shortest seek is the single-track one.
	if got := m.SeekTime(1); got < time.Millisecond || got > time.Millisecond+time.Microsecond {
		t.Errorf("seek of one byte: %v", got)
	}
}

func TestDefaultHDD(t *testing.T) {
	m := DefaultHDD()
	// 7200 rpm: 8.33 ms a turn, 4.17 ms on average.
	if got := m.RotationTime(); math.Abs(got.Seconds()-30.0/7200) > 1e-9 {
		t.Errorf("rotation %v", got)
	}
	// The model's mean over uniformly random pairs is the datasheet's
	// average: integrate numerically.
	const steps = 2000
	var sum float64
	for i := range steps {
		x := (float64(i) + 0.5) / steps
		// density of |X-Y| = x is 2(1-x)
		sum += m.SeekTime(int64(x*float64(m.CapacityBytes))).Seconds() * 2 * (1 - x) / steps
	}
	if math.Abs(sum-m.SeekAvg.Seconds()) > 20e-6 {
		t.Errorf("mean seek %.3f ms, datasheet average %v", sum*1e3, m.SeekAvg)
	}
	if f := m.SeekFull(); f < 12*time.Millisecond || f > 16*time.Millisecond {
		t.Errorf("full stroke %v outside datasheets' range", f)
	}
}
