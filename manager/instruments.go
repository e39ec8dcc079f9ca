package manager

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
)

// instruments are the manager's Prometheus metrics. Counters and histograms are
// updated as things happen; gauges of the state (workers, jobs, partitions,
// free bytes) are computed at scrape time by stateCollector.
type instruments struct {
	allocations         *prometheus.CounterVec
	allocationFailures  prometheus.Counter
	workerRegistrations prometheus.Counter
	workersLost         prometheus.Counter
	partitionsLost      prometheus.Counter
	jobsReleased        *prometheus.CounterVec
	heartbeatSeconds    prometheus.Histogram
	heartbeatGap        prometheus.Histogram
	rpcSeconds          *prometheus.HistogramVec
	isLeader            prometheus.Gauge
	leaderChanges       prometheus.Counter
	rebuildSeconds      prometheus.Gauge
}

func newInstruments(reg prometheus.Registerer, s *Server) *instruments {
	m := &instruments{
		allocations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_manager_partitions_allocated_total",
			Help: "Partitions given a new place (kind=map) or owner (kind=reduce); rate() gives allocations per second.",
		}, []string{"kind"}),
		allocationFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sluice_manager_allocation_failures_total",
			Help: "Allocation requests refused because no disk qualified.",
		}),
		workerRegistrations: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sluice_manager_worker_registrations_total",
			Help: "Worker registrations, including re-registrations.",
		}),
		workersLost: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sluice_manager_workers_lost_total",
			Help: "Workers declared lost after missing heartbeats.",
		}),
		partitionsLost: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sluice_manager_producers_lost_total",
			Help: "Committed producers reported lost to their jobs (worker or disk lost).",
		}),
		jobsReleased: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_manager_jobs_released_total",
			Help: "Jobs released, by reason (unregistered, lease expired).",
		}, []string{"reason"}),
		heartbeatSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "sluice_manager_worker_heartbeat_seconds",
			Help:    "Time the manager took to handle a worker heartbeat.",
			Buckets: prometheus.ExponentialBuckets(20e-6, 4, 10),
		}),
		heartbeatGap: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "sluice_manager_worker_heartbeat_interval_seconds",
			Help:    "Time between consecutive heartbeats of a worker, as received (late heartbeats show here before workers are lost).",
			Buckets: []float64{0.25, 0.5, 1, 2, 3, 5, 8, 12, 20, 30, 60},
		}),
		rpcSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "sluice_manager_rpc_seconds",
			Help:    "gRPC calls handled, by method and status code.",
			Buckets: prometheus.ExponentialBuckets(20e-6, 4, 10),
		}, []string{"method", "code"}),
		isLeader: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sluice_manager_is_leader",
			Help: "1 if this manager is the leader (always, standalone), else 0.",
		}),
		leaderChanges: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sluice_manager_leadership_acquired_total",
			Help: "Times this manager became the leader.",
		}),
		rebuildSeconds: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sluice_manager_last_rebuild_seconds",
			Help: "How long the last state rebuild after taking over took.",
		}),
	}
	reg.MustRegister(m.allocations, m.allocationFailures, m.workerRegistrations, m.workersLost, m.partitionsLost,
		m.jobsReleased, m.heartbeatSeconds, m.heartbeatGap, m.rpcSeconds, m.isLeader, m.leaderChanges, m.rebuildSeconds,
		&stateCollector{s: s})
	return m
}

// unaryInterceptor times every call.
func (m *instruments) unaryInterceptor(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	start := time.Now()
	resp, err := handler(ctx, req)
	m.rpcSeconds.WithLabelValues(info.FullMethod, status.Code(err).String()).Observe(time.Since(start).Seconds())
	return resp, err
}

var (
	descWorkers    = prometheus.NewDesc("sluice_manager_workers", "Workers known, by state (alive, lost).", []string{"state"}, nil)
	descDisks      = prometheus.NewDesc("sluice_manager_disks", "Disks known, by state (usable, down).", []string{"state"}, nil)
	descJobs       = prometheus.NewDesc("sluice_manager_jobs", "Jobs registered (or adopted from worker reports).", nil, nil)
	descDatasets   = prometheus.NewDesc("sluice_manager_datasets", "Datasets tracked.", nil, nil)
	descPartitions = prometheus.NewDesc("sluice_manager_partitions", "Partitions tracked, by kind (map, reduce) and state (placed, owned, committed, lost).", []string{"kind", "state"}, nil)
	descFree       = prometheus.NewDesc("sluice_manager_disk_free_bytes", "Free bytes of usable disks, by disk type.", []string{"type"}, nil)
	descCapacity   = prometheus.NewDesc("sluice_manager_disk_capacity_bytes", "Capacity of usable disks, by disk type.", []string{"type"}, nil)
	descRebuilding = prometheus.NewDesc("sluice_manager_rebuilding", "1 while a new leader waits for workers to re-register.", nil, nil)
)

// stateCollector reports the leader's state at scrape time. A standby
// reports nothing of it.
type stateCollector struct{ s *Server }

func (sc *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descWorkers, descDisks, descJobs, descDatasets, descPartitions, descFree, descCapacity, descRebuilding} {
		ch <- d
	}
}

func (sc *stateCollector) Collect(ch chan<- prometheus.Metric) {
	c := sc.s.current()
	if c == nil {
		return
	}
	st := c.stats()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	gauge(descWorkers, float64(st.workersAlive), "alive")
	gauge(descWorkers, float64(st.workersLost), "lost")
	gauge(descDisks, float64(st.disksUsable), "usable")
	gauge(descDisks, float64(st.disksDown), "down")
	gauge(descJobs, float64(st.jobs))
	gauge(descDatasets, float64(st.datasets))
	for k, v := range st.partitions {
		gauge(descPartitions, float64(v), k[0], k[1])
	}
	for t, v := range st.freeBytes {
		gauge(descFree, float64(v), t)
	}
	for t, v := range st.capacityBytes {
		gauge(descCapacity, float64(v), t)
	}
	rebuilding := 0.0
	if st.rebuilding {
		rebuilding = 1
	}
	gauge(descRebuilding, rebuilding)
}
