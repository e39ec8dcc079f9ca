package scheduler

import (
	"math"
	"time"
)

// TraceRead is one disk read the scheduler issued, in issue order: a
// contiguous range of one file, split into the physically contiguous
// segments it covers on the device.
type TraceRead struct {
	File     uint64 // hash of the file's FileKey
	Offset   int64  // file offset of the read
	Length   int64
	Pieces   int // reader pieces (parts of extents) it served
	Segments []TraceSegment
}

// TraceSegment is a physically contiguous part of a read: device offset and
// length where FIEMAP placed the file, else a synthetic position (see
// Config.NoFiemap) that keeps a file's own bytes contiguous and puts files
// far apart.
type TraceSegment struct {
	Physical int64
	Length   int64
}

// HDD is a model of a rotating disk that replays a read trace and says how
// long a real 7200 rpm drive would have taken. It knows three costs:
//
//   - seek: moving the head between two positions d bytes apart takes
//     SeekMin + (SeekFull - SeekMin) * sqrt(d / Capacity). Short seeks are
//     dominated by acceleration, hence the square root (Ruemmler and Wilkes,
//     "An introduction to disk drive modeling", IEEE Computer 27(3), 1994,
//     model seek time as a + b*sqrt(d) for short and a + b*d for long seeks;
//     one square-root curve through the datasheet's single-track and average
//     figures is close enough for comparing two schedules). Byte distance
//     stands for cylinder distance, which ignores zoning: outer tracks hold
//     more bytes.
//   - rotation: after every seek the sector is, on average, half a
//     revolution away: 30/RPM seconds.
//   - transfer: bytes / TransferBytesPerSecond, the sustained media rate.
//
// A read that starts exactly where the previous one ended costs its
// transfer only; any other read is a seek, wherever it lands, even close
// ahead. The first read of a trace starts from an unknown position and
// costs an average seek. The model replays reads in issue order, one at a
// time. A drive with a command queue (NCQ, up to 32 commands) reorders what
// is queued and would do somewhat better than this on a random trace; the
// model ignores that, and the scheduler keeps only Config.Depth reads queued
// anyway.
type HDD struct {
	RPM float64
	// SeekMin is the single-track seek (settling included), SeekAvg the
	// datasheet's average seek over all pairs of positions.
	SeekMin, SeekAvg       time.Duration
	TransferBytesPerSecond float64
	// CapacityBytes is the span a full-stroke seek crosses.
	CapacityBytes int64
}

// DefaultHDD is a 7200 rpm, 4 TB drive with the figures of one datasheet:
// Western Digital Ultrastar DC HC310 OEM specification, section 4.5.1:
// average read seek 7.4 ms, single-track read seek 0.23 ms, 8.33 ms per
// revolution (average latency 4.16 ms). The transfer rate is the 210 MB/s
// outer-diameter sustained rate of a Seagate BarraCuda 7200 rpm drive
// (ST1000DM010 datasheet); the average over the whole surface is lower,
// which would only make every seek relatively cheaper.
func DefaultHDD() HDD {
	return HDD{
		RPM:                    7200,
		SeekMin:                230 * time.Microsecond,
		SeekAvg:                7400 * time.Microsecond,
		TransferBytesPerSecond: 210e6,
		CapacityBytes:          4e12,
	}
}

// meanSqrtDistance is E[sqrt|X-Y|] for X, Y uniform on [0, 1]: 2/((a+1)(a+2))
// with a = 1/2. The average seek over all pairs of positions is therefore
// SeekMin + (SeekFull-SeekMin) * 8/15, which gives SeekFull from SeekAvg.
const meanSqrtDistance = 8.0 / 15

// SeekFull is the full-stroke seek the model derives from SeekMin and
// SeekAvg (13.7 ms for DefaultHDD, in line with datasheets' 13–17 ms).
func (m HDD) SeekFull() time.Duration {
	return m.SeekMin + time.Duration(float64(m.SeekAvg-m.SeekMin)/meanSqrtDistance)
}

// SeekTime is the head movement over d bytes (0 for d = 0).
func (m HDD) SeekTime(d int64) time.Duration {
	if d < 0 {
		d = -d
	}
	if d == 0 {
		return 0
	}
	frac := math.Min(float64(d)/float64(m.CapacityBytes), 1)
	return m.SeekMin + time.Duration(float64(m.SeekFull()-m.SeekMin)*math.Sqrt(frac))
}

// RotationTime is the average rotational latency: half a revolution.
func (m HDD) RotationTime() time.Duration {
	return time.Duration(30 / m.RPM * float64(time.Second))
}

// TransferTime is the time to read n bytes once the head is there.
func (m HDD) TransferTime(n int64) time.Duration {
	return time.Duration(float64(n) / m.TransferBytesPerSecond * float64(time.Second))
}

// ModelResult is what a replay costs.
type ModelResult struct {
	Time  time.Duration
	Seeks int   // accesses that did not continue where the last one ended
	Reads int   // reads replayed
	Bytes int64 // bytes transferred
}

// Replay runs the reads through the model in order.
func (m HDD) Replay(reads []TraceRead) ModelResult {
	var res ModelResult
	var pos int64
	first := true
	for i := range reads {
		res.Reads++
		for _, s := range reads[i].Segments {
			switch {
			case first:
				res.Time += m.SeekAvg + m.RotationTime()
				res.Seeks++
				first = false
			case s.Physical != pos:
				res.Time += m.SeekTime(s.Physical-pos) + m.RotationTime()
				res.Seeks++
			}
			res.Time += m.TransferTime(s.Length)
			res.Bytes += s.Length
			pos = s.Physical + s.Length
		}
	}
	return res
}
