package diskio

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/sluice-shuffle/sluice/uring"
)

// Backend names, as flags and config files spell them.
const (
	BackendAuto     = "auto"     // the best that works here
	BackendURing    = "uring"    // io_uring with O_DIRECT
	BackendPool     = "pool"     // pread/pwrite pool with O_DIRECT
	BackendBuffered = "buffered" // pread/pwrite pool, page cache + fdatasync
)

// Backends lists the accepted backend names.
var Backends = []string{BackendAuto, BackendURing, BackendPool, BackendBuffered}

// DefaultDepth is the default number of requests in flight per IO.
const DefaultDepth = 32

// Config chooses and sizes an IO.
type Config struct {
	Backend string // one of Backends; "" means auto
	Depth   int    // requests in flight at most; 0 means DefaultDepth
	// Dir is a directory on the filesystem the IO will serve. auto probes it
	// for O_DIRECT support and falls back to buffered IO where it is refused
	// (tmpfs); explicit direct backends fail there instead.
	Dir string
	// Log receives the one line saying which backend auto chose and why;
	// nil means slog.Default().
	Log *slog.Logger
}

// The probes New runs; tests replace them to reach the fallbacks on a
// machine where everything works.
var (
	probeURing  = uring.Probe
	probeDirect = DirectSupported
)

// New returns the IO the config asks for.
func New(cfg Config) (IO, error) {
	depth := cfg.Depth
	if depth == 0 {
		depth = DefaultDepth
	}
	if depth < 1 || depth > 4096 {
		return nil, fmt.Errorf("diskio: depth %d out of range [1, 4096]", depth)
	}
	direct := true
	if cfg.Dir != "" && cfg.Backend != BackendBuffered {
		ok, err := probeDirect(cfg.Dir)
		if err != nil {
			return nil, err
		}
		direct = ok
	}
	switch cfg.Backend {
	case BackendURing, BackendPool:
		if !direct {
			return nil, fmt.Errorf("diskio: backend %q needs O_DIRECT, which the filesystem of %s refuses; use %q or %q", cfg.Backend, cfg.Dir, BackendBuffered, BackendAuto)
		}
		if cfg.Backend == BackendPool {
			return newPool(depth, true), nil
		}
		if err := probeURing(); err != nil {
			return nil, fmt.Errorf("diskio: backend %q: %w", cfg.Backend, err)
		}
		return newRing(depth, true)
	case BackendBuffered:
		return newPool(depth, false), nil
	case BackendAuto, "":
		log := cfg.Log
		if log == nil {
			log = slog.Default()
		}
		why := ""
		if !direct {
			why = "O_DIRECT refused by the filesystem of " + cfg.Dir + "; "
		}
		probeErr := probeURing()
		if probeErr == nil {
			io, err := newRing(depth, direct)
			if err == nil {
				args := []any{"dir", cfg.Dir, "io", io.Info().String()}
				if why != "" {
					args = append(args, "note", strings.TrimSuffix(why, "; "))
				}
				log.Info("diskio: auto chose io_uring", args...)
				return io, nil
			}
			probeErr = err
		}
		var ue *uring.UnusableError
		if !errors.As(probeErr, &ue) {
			return nil, probeErr
		}
		io := newPool(depth, direct)
		log.Warn("diskio: auto fell back to the pread/pwrite pool", "dir", cfg.Dir, "io", io.Info().String(), "reason", why+ue.Error())
		return io, nil
	default:
		return nil, fmt.Errorf("diskio: unknown backend %q (want one of %s)", cfg.Backend, strings.Join(Backends, ", "))
	}
}
