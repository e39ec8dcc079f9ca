package manager

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"github.com/sluice-shuffle/sluice/manager/api"
	"github.com/sluice-shuffle/sluice/manager/config"
	"github.com/sluice-shuffle/sluice/manager/placement"
)

// Default ports.
const (
	DefaultPort        = 7450
	DefaultMetricsPort = 7451
)

// Config is the manager's configuration. DefaultConfig gives the defaults;
// the `sluice manager` command overlays a YAML file, SLUICE_MANAGER_*
// environment variables and flags (manager/config).
type Config struct {
	Listen        string `yaml:"listen" help:"gRPC listen address (host:port)"`
	Advertise     string `yaml:"advertise" help:"address clients and workers dial to reach this manager (default: this host's name and the listen port)"`
	MetricsListen string `yaml:"metrics-listen" help:"HTTP address for /metrics, /healthz, /readyz (empty: disabled)"`
	Pprof         bool   `yaml:"pprof" help:"also serve Go's profiler on the metrics address, /debug/pprof/ (keep that address private)"`
	ManagerID     string `yaml:"manager-id" help:"name of this manager (default: the advertised address)"`
	ClusterID     string `yaml:"cluster-id" help:"cluster this manager belongs to (etcd key namespace; clients may choose among clusters)"`

	WorkerHeartbeatInterval time.Duration `yaml:"worker-heartbeat-interval" help:"how often workers send heartbeats"`
	WorkerTimeout           time.Duration `yaml:"worker-timeout" help:"a worker without heartbeat for this long is lost, with its partitions"`
	JobHeartbeatInterval    time.Duration `yaml:"job-heartbeat-interval" help:"how often clients send job heartbeats"`
	JobLeaseTimeout         time.Duration `yaml:"job-lease-timeout" help:"a job without heartbeat for this long is released, with its data"`
	RebuildWindow           time.Duration `yaml:"rebuild-window" help:"after taking over, how long to wait for workers to re-register before answering incomplete location lookups (0: do not wait)"`
	ReleasedRetention       time.Duration `yaml:"released-retention" help:"how long released job ids are remembered, so that data of them a returning worker reports is deleted at once"`

	Placement      string       `yaml:"placement" help:"placement strategy: load-aware or round-robin"`
	ReserveBytes   config.Bytes `yaml:"reserve" help:"free space left untouched on every disk"`
	PartitionBytes config.Bytes `yaml:"expected-partition-size" help:"expected partition size when a dataset does not give one (placement accounting unit)"`

	EtcdEndpoints   []string      `yaml:"etcd-endpoints" help:"etcd endpoints for HA (comma-separated); empty: standalone"`
	EtcdRoot        string        `yaml:"etcd-root" help:"etcd key prefix"`
	EtcdSessionTTL  time.Duration `yaml:"etcd-session-ttl" help:"leader lease TTL: a crashed leader is replaced after at most this long"`
	EtcdDialTimeout time.Duration `yaml:"etcd-dial-timeout" help:"timeout for connecting to etcd"`

	MaxMessageBytes config.Bytes `yaml:"max-message-size" help:"largest gRPC message accepted (worker registrations list every partition)"`
	MaxJobEvents    int          `yaml:"max-job-events" help:"unacknowledged lost/restored events kept per job before the oldest are dropped"`
	LogLevel        string       `yaml:"log-level" help:"debug, info, warn or error"`
}

// DefaultConfig returns the defaults: standalone, load-aware placement,
// 2 s heartbeats, 10 s worker timeout, 60 s job lease, 5 s etcd session
// TTL and 3 s rebuild window (so a crashed leader is replaced, and its
// successor answers in full, within 8 s even if a worker died with it).
func DefaultConfig() Config {
	return Config{
		Listen:                  fmt.Sprintf(":%d", DefaultPort),
		MetricsListen:           fmt.Sprintf(":%d", DefaultMetricsPort),
		ClusterID:               api.DefaultClusterID,
		WorkerHeartbeatInterval: 2 * time.Second,
		WorkerTimeout:           10 * time.Second,
		JobHeartbeatInterval:    2 * time.Second,
		JobLeaseTimeout:         60 * time.Second,
		RebuildWindow:           3 * time.Second,
		ReleasedRetention:       10 * time.Minute,
		Placement:               "load-aware",
		ReserveBytes:            5 << 30,
		PartitionBytes:          placement.DefaultPartitionBytes,
		EtcdRoot:                api.DefaultEtcdRoot,
		EtcdSessionTTL:          5 * time.Second,
		EtcdDialTimeout:         5 * time.Second,
		MaxMessageBytes:         256 << 20,
		MaxJobEvents:            100_000,
		LogLevel:                "info",
	}
}

// HA reports whether the configuration asks for etcd-based HA.
func (c *Config) HA() bool { return len(c.EtcdEndpoints) > 0 }

// Validate checks the configuration and names every problem.
func (c *Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if c.Listen == "" {
		bad("listen: must not be empty")
	} else if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		bad("listen: %w", err)
	}
	if c.MetricsListen != "" {
		if _, _, err := net.SplitHostPort(c.MetricsListen); err != nil {
			bad("metrics-listen: %w", err)
		}
	}
	if c.ClusterID == "" || strings.Contains(c.ClusterID, "/") {
		bad("cluster-id: %q must be non-empty and contain no '/'", c.ClusterID)
	}
	if c.WorkerHeartbeatInterval <= 0 {
		bad("worker-heartbeat-interval: must be positive")
	}
	if c.WorkerTimeout < 2*c.WorkerHeartbeatInterval {
		bad("worker-timeout: %v must be at least twice worker-heartbeat-interval (%v)", c.WorkerTimeout, c.WorkerHeartbeatInterval)
	}
	if c.JobHeartbeatInterval <= 0 {
		bad("job-heartbeat-interval: must be positive")
	}
	if c.JobLeaseTimeout < 2*c.JobHeartbeatInterval {
		bad("job-lease-timeout: %v must be at least twice job-heartbeat-interval (%v)", c.JobLeaseTimeout, c.JobHeartbeatInterval)
	}
	if c.RebuildWindow < 0 || c.ReleasedRetention < 0 {
		bad("rebuild-window and released-retention must not be negative")
	}
	if _, err := placement.NewStrategy(c.Placement, placement.Options{}); err != nil {
		bad("placement: %w", err)
	}
	if c.PartitionBytes == 0 {
		bad("expected-partition-size: must be positive")
	}
	if c.HA() {
		if c.EtcdSessionTTL < 2*time.Second {
			bad("etcd-session-ttl: %v is below etcd's minimum of 2s", c.EtcdSessionTTL)
		}
		if c.EtcdRoot == "" || !strings.HasPrefix(c.EtcdRoot, "/") {
			bad("etcd-root: %q must start with '/'", c.EtcdRoot)
		}
	}
	if c.MaxMessageBytes < 4<<20 {
		bad("max-message-size: %v is below gRPC's default of 4MiB", c.MaxMessageBytes)
	}
	if c.MaxJobEvents < 1 {
		bad("max-job-events: must be positive")
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		bad("log-level: %q is not one of debug, info, warn, error", c.LogLevel)
	}
	return errors.Join(errs...)
}

// advertiseAddress is the address published for this manager: Advertise,
// or this host's name with the port actually listened on.
func (c *Config) advertiseAddress(listened net.Addr) string {
	if c.Advertise != "" {
		return c.Advertise
	}
	_, port, err := net.SplitHostPort(listened.String())
	if err != nil {
		return listened.String()
	}
	host, _, _ := net.SplitHostPort(c.Listen)
	if host == "" || host == "0.0.0.0" || host == "::" {
		if h, err := os.Hostname(); err == nil {
			host = h
		} else {
			host = "localhost"
		}
	}
	return net.JoinHostPort(host, port)
}
