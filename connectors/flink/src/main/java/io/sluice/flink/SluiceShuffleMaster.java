package io.sluice.flink;

import io.grpc.StatusRuntimeException;
import io.sluice.flink.control.ManagerClient;
import io.sluice.manager.v1.AllocateMapPartitionsRequest;
import io.sluice.manager.v1.AllocateMapPartitionsResponse;
import io.sluice.manager.v1.GetLocationsRequest;
import io.sluice.manager.v1.GetLocationsResponse;
import io.sluice.manager.v1.HeartbeatAction;
import io.sluice.manager.v1.JobEvent;
import io.sluice.manager.v1.JobEventKind;
import io.sluice.manager.v1.JobHeartbeatRequest;
import io.sluice.manager.v1.JobHeartbeatResponse;
import io.sluice.manager.v1.MapLocation;
import io.sluice.manager.v1.MapPlacement;
import io.sluice.manager.v1.PartitionKind;
import io.sluice.manager.v1.ProducerAttempt;
import io.sluice.manager.v1.ProtocolRange;
import io.sluice.manager.v1.RegisterDatasetRequest;
import io.sluice.manager.v1.RegisterJobRequest;
import io.sluice.manager.v1.RegisterJobResponse;
import io.sluice.manager.v1.ReleaseRequest;
import io.sluice.manager.v1.UnregisterJobRequest;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Collection;
import java.util.HashMap;
import java.util.HashSet;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.Set;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.Executors;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.ScheduledFuture;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import org.apache.flink.api.common.JobID;
import org.apache.flink.configuration.Configuration;
import org.apache.flink.configuration.MemorySize;
import org.apache.flink.runtime.io.network.partition.ResultPartitionID;
import org.apache.flink.runtime.io.network.partition.ResultPartitionType;
import org.apache.flink.runtime.jobgraph.IntermediateDataSetID;
import org.apache.flink.runtime.shuffle.JobShuffleContext;
import org.apache.flink.runtime.shuffle.PartitionDescriptor;
import org.apache.flink.runtime.shuffle.ProducerDescriptor;
import org.apache.flink.runtime.shuffle.ShuffleDescriptor;
import org.apache.flink.runtime.shuffle.ShuffleMaster;
import org.apache.flink.runtime.shuffle.ShuffleMasterContext;
import org.apache.flink.runtime.shuffle.TaskInputsOutputsDescriptor;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The JobManager side: talks to the Sluice manager for every job of the cluster.
 *
 * <ul>
 *   <li>registers each job, renews its lease with heartbeats, unregisters it (which releases its data);
 *   <li>registers each dataset (a Flink IntermediateDataSet, kind MAP_PARTITION) once, and allocates a place
 *       per producer attempt: registrations that arrive together are batched into one
 *       AllocateMapPartitions call per dataset;
 *   <li>turns the manager's lost-producer events (and GetLocations' lost lists) into
 *       {@link JobShuffleContext#stopTrackingAndReleasePartitions} for exactly those producers, after a
 *       grace period during which a returning worker cancels the loss;
 *   <li>registers the job and its datasets again (with the producers it knows committed) when a new
 *       manager leader does not know them.
 * </ul>
 *
 * <p>All manager calls run on one thread of the master's own, never on Flink's main thread.
 */
public class SluiceShuffleMaster implements ShuffleMaster<SluiceShuffleDescriptor> {
    private static final Logger LOG = LoggerFactory.getLogger(SluiceShuffleMaster.class);
    static final String CLIENT = "flink-1.20 sluice-connector";
    /** Every how many heartbeats the master asks for the locations of its datasets. */
    private static final int LOCATION_POLL_EVERY = 3;

    private final ShuffleMasterContext context;
    private final Configuration conf;
    private final MemorySize memoryPerPartition;
    private final MemorySize memoryPerGate;
    private final Duration grace;
    private ManagerClient manager;
    private ScheduledExecutorService executor;
    private final Map<JobID, JobState> jobs = new ConcurrentHashMap<>();

    /** Producers reported lost and released in Flink (for tests and operators). */
    public static final AtomicLong PRODUCERS_RELEASED_AS_LOST = new AtomicLong();

    public SluiceShuffleMaster(ShuffleMasterContext context) {
        this.context = context;
        this.conf = context.getConfiguration();
        this.memoryPerPartition = conf.get(SluiceOptions.MEMORY_PER_PARTITION);
        this.memoryPerGate = conf.get(SluiceOptions.MEMORY_PER_GATE);
        this.grace = conf.get(SluiceOptions.WORKER_LOSS_GRACE);
    }

    @Override
    public void start() {
        manager = new ManagerClient(SluiceOptions.nonEmpty(conf.get(SluiceOptions.MANAGER_ADDRESSES)),
                SluiceOptions.nonEmpty(conf.get(SluiceOptions.ETCD_ENDPOINTS)), conf.get(SluiceOptions.ETCD_ROOT),
                conf.get(SluiceOptions.CLUSTER_ID), conf.get(SluiceOptions.RPC_TIMEOUT));
        executor = Executors.newSingleThreadScheduledExecutor(r -> {
            Thread t = new Thread(r, "sluice-shuffle-master");
            t.setDaemon(true);
            return t;
        });
        LOG.info("Sluice shuffle master started (managers {}, etcd {})", conf.get(SluiceOptions.MANAGER_ADDRESSES),
                conf.get(SluiceOptions.ETCD_ENDPOINTS));
    }

    @Override
    public void close() throws Exception {
        if (executor != null) {
            executor.shutdownNow();
        }
        if (manager != null) {
            manager.close();
        }
    }

    // ------------------------------------------------------------------------------------- jobs --

    /** What the master keeps of one job. Accessed only on the executor thread, except the pending queue. */
    private final class JobState {
        final JobShuffleContext context;
        final String id;
        final Map<String, DatasetState> datasets = new LinkedHashMap<>();
        /** Registrations waiting for the next allocation batch (any thread adds). */
        final List<PendingRegistration> pending = new ArrayList<>();
        boolean drainScheduled;
        ScheduledFuture<?> heartbeat;
        long ackedEventSeq;
        int heartbeats;
        boolean registered;
        /** Lost producers waiting out the grace period: key → when to release. */
        final Map<ProducerKey, Long> lost = new LinkedHashMap<>();
        volatile boolean closed;

        JobState(JobShuffleContext context) {
            this.context = context;
            this.id = context.getJobId().toHexString();
        }
    }

    private static final class DatasetState {
        final String id;
        final int producers;
        final int subpartitions;
        boolean registered;
        /** Flink's id of each producer attempt the master placed, for lost events. */
        final Map<Long, ResultPartitionID> attempts = new HashMap<>();
        /** Producer attempts the manager last reported committed and available. */
        final Set<Long> committed = new HashSet<>();

        DatasetState(String id, int producers, int subpartitions) {
            this.id = id;
            this.producers = producers;
            this.subpartitions = subpartitions;
        }
    }

    private static long key(int map, int attempt) {
        return (long) map << 32 | (attempt & 0xFFFF_FFFFL);
    }

    private static final class ProducerKey {
        final String dataset;
        final int map;
        final int attempt;

        ProducerKey(String dataset, int map, int attempt) {
            this.dataset = dataset;
            this.map = map;
            this.attempt = attempt;
        }

        @Override
        public boolean equals(Object o) {
            if (!(o instanceof ProducerKey)) {
                return false;
            }
            ProducerKey k = (ProducerKey) o;
            return map == k.map && attempt == k.attempt && dataset.equals(k.dataset);
        }

        @Override
        public int hashCode() {
            return Objects.hash(dataset, map, attempt);
        }

        @Override
        public String toString() {
            return dataset + "/" + map + "." + attempt;
        }
    }

    private static final class PendingRegistration {
        final PartitionDescriptor partition;
        final ProducerDescriptor producer;
        final CompletableFuture<SluiceShuffleDescriptor> future = new CompletableFuture<>();

        PendingRegistration(PartitionDescriptor partition, ProducerDescriptor producer) {
            this.partition = partition;
            this.producer = producer;
        }
    }

    @Override
    public void registerJob(JobShuffleContext context) {
        JobState job = new JobState(context);
        jobs.put(context.getJobId(), job);
        executor.execute(() -> {
            try {
                registerJobAt(job);
            } catch (RuntimeException e) {
                // Heartbeats retry the registration; allocations fail meanwhile and say why.
                LOG.warn("Sluice: registering job {} failed; retrying with the heartbeats", job.id, e);
                scheduleHeartbeat(job, 2000);
            }
        });
    }

    private void registerJobAt(JobState job) {
        RegisterJobResponse r = manager.job(s -> s.registerJob(RegisterJobRequest.newBuilder()
                .setJobId(job.id)
                .setProtocol(ProtocolRange.newBuilder().setMin(SluiceOptions.CONTROL_PROTOCOL_MIN).setMax(SluiceOptions.CONTROL_PROTOCOL_MAX))
                .setClient(CLIENT)
                .build()));
        job.registered = true;
        LOG.info("Sluice: job {} registered (lease {} ms, heartbeat every {} ms)", job.id, r.getLeaseTimeoutMs(), r.getHeartbeatIntervalMs());
        scheduleHeartbeat(job, Math.max(100, r.getHeartbeatIntervalMs()));
    }

    private void scheduleHeartbeat(JobState job, long intervalMillis) {
        if (job.heartbeat != null) {
            job.heartbeat.cancel(false);
        }
        job.heartbeat = executor.scheduleWithFixedDelay(() -> heartbeat(job), intervalMillis, intervalMillis, TimeUnit.MILLISECONDS);
    }

    @Override
    public void unregisterJob(JobID jobID) {
        JobState job = jobs.remove(jobID);
        if (job == null) {
            return;
        }
        job.closed = true;
        executor.execute(() -> {
            if (job.heartbeat != null) {
                job.heartbeat.cancel(false);
            }
            synchronized (job.pending) {
                for (PendingRegistration p : job.pending) {
                    p.future.completeExceptionally(new IllegalStateException("job " + job.id + " was unregistered"));
                }
                job.pending.clear();
            }
            try {
                manager.job(s -> s.unregisterJob(UnregisterJobRequest.newBuilder().setJobId(job.id).build()));
                LOG.info("Sluice: job {} unregistered; its data is released", job.id);
            } catch (RuntimeException e) {
                // The job's lease runs out and the manager releases it anyway.
                LOG.warn("Sluice: unregistering job {} failed; the manager releases it when its lease expires", job.id, e);
            }
        });
    }

    // ------------------------------------------------------------------------------- partitions --

    @Override
    public CompletableFuture<SluiceShuffleDescriptor> registerPartitionWithProducer(JobID jobID, PartitionDescriptor partition,
            ProducerDescriptor producer) {
        JobState job = jobs.get(jobID);
        if (job == null) {
            CompletableFuture<SluiceShuffleDescriptor> f = new CompletableFuture<>();
            f.completeExceptionally(new IllegalStateException("job " + jobID + " is not registered with the Sluice shuffle master"));
            return f;
        }
        if (!partition.getPartitionType().isBlockingOrBlockingPersistentResultPartition()) {
            CompletableFuture<SluiceShuffleDescriptor> f = new CompletableFuture<>();
            f.completeExceptionally(new UnsupportedOperationException("Sluice shuffles blocking partitions only, not "
                    + partition.getPartitionType() + ": run batch jobs with execution.batch-shuffle-mode: ALL_EXCHANGES_BLOCKING"));
            return f;
        }
        PendingRegistration p = new PendingRegistration(partition, producer);
        boolean schedule;
        synchronized (job.pending) {
            job.pending.add(p);
            schedule = !job.drainScheduled;
            job.drainScheduled = true;
        }
        if (schedule) {
            executor.execute(() -> drain(job));
        }
        return p.future;
    }

    /** Allocates everything pending, one AllocateMapPartitions call per dataset. */
    private void drain(JobState job) {
        List<PendingRegistration> batch;
        synchronized (job.pending) {
            batch = new ArrayList<>(job.pending);
            job.pending.clear();
            job.drainScheduled = false;
        }
        Map<String, List<PendingRegistration>> byDataset = new LinkedHashMap<>();
        for (PendingRegistration p : batch) {
            byDataset.computeIfAbsent(datasetId(p.partition.getResultId()), k -> new ArrayList<>()).add(p);
        }
        for (Map.Entry<String, List<PendingRegistration>> e : byDataset.entrySet()) {
            try {
                allocate(job, e.getKey(), e.getValue());
            } catch (RuntimeException ex) {
                for (PendingRegistration p : e.getValue()) {
                    p.future.completeExceptionally(new RuntimeException("Sluice: no place for the partition " + p.partition.getPartitionId()
                            + " of job " + job.id + ": " + ex.getMessage(), ex));
                }
            }
        }
    }

    static String datasetId(IntermediateDataSetID id) {
        return id.toHexString();
    }

    private void allocate(JobState job, String datasetId, List<PendingRegistration> ps) {
        if (!job.registered) {
            registerJobAt(job);
        }
        PartitionDescriptor first = ps.get(0).partition;
        DatasetState ds = job.datasets.get(datasetId);
        if (ds == null) {
            ds = new DatasetState(datasetId, first.getTotalNumberOfPartitions(), first.getNumberOfSubpartitions());
            job.datasets.put(datasetId, ds);
        }
        if (!ds.registered) {
            registerDataset(job, ds);
        }
        AllocateMapPartitionsRequest.Builder req = AllocateMapPartitionsRequest.newBuilder().setJobId(job.id).setDatasetId(datasetId);
        for (PendingRegistration p : ps) {
            req.addProducers(ProducerAttempt.newBuilder().setMapIndex(mapIndex(p)).setAttempt(attempt(p)));
        }
        AllocateMapPartitionsResponse resp = manager.dataset(s -> s.allocateMapPartitions(req.build()));
        if (resp.getPlacementsCount() != ps.size()) {
            throw new IllegalStateException("the manager placed " + resp.getPlacementsCount() + " of " + ps.size() + " producers");
        }
        for (int i = 0; i < ps.size(); i++) {
            PendingRegistration p = ps.get(i);
            MapPlacement pl = resp.getPlacements(i);
            ResultPartitionID rpid = new ResultPartitionID(p.partition.getPartitionId(), p.producer.getProducerExecutionId());
            ds.attempts.put(key(mapIndex(p), attempt(p)), rpid);
            p.future.complete(new SluiceShuffleDescriptor(rpid, job.id, datasetId, mapIndex(p), attempt(p),
                    p.partition.getTotalNumberOfPartitions(), p.partition.getNumberOfSubpartitions(), p.partition.isBroadcast(),
                    pl.getWorkerId(), pl.getDataAddress(), pl.getDiskId()));
        }
    }

    private void registerDataset(JobState job, DatasetState ds) {
        RegisterDatasetRequest.Builder req = RegisterDatasetRequest.newBuilder()
                .setJobId(job.id)
                .setDatasetId(ds.id)
                .setKind(PartitionKind.MAP_PARTITION)
                .setProducers(ds.producers)
                .setSubpartitions(Math.max(1, ds.subpartitions))
                .setExpectedPartitionBytes(memoryPerPartition.getBytes());
        for (long k : ds.committed) {
            req.addCommitted(ProducerAttempt.newBuilder().setMapIndex((int) (k >>> 32)).setAttempt((int) k));
        }
        manager.dataset(s -> s.registerDataset(req.build()));
        ds.registered = true;
    }

    private static int mapIndex(PendingRegistration p) {
        return p.partition.getPartitionId().getPartitionNumber();
    }

    private static int attempt(PendingRegistration p) {
        return p.producer.getProducerExecutionId().getAttemptNumber();
    }

    @Override
    public void releasePartitionExternally(ShuffleDescriptor shuffleDescriptor) {
        if (!(shuffleDescriptor instanceof SluiceShuffleDescriptor)) {
            return;
        }
        SluiceShuffleDescriptor d = (SluiceShuffleDescriptor) shuffleDescriptor;
        executor.execute(() -> {
            try {
                manager.dataset(s -> s.release(ReleaseRequest.newBuilder().setJobId(d.jobId()).setDatasetId(d.datasetId())
                        .addMapPartitions(ProducerAttempt.newBuilder().setMapIndex(d.mapIndex()).setAttempt(d.attempt()))
                        .build()));
            } catch (RuntimeException e) {
                // Best effort: unregistering the job (or its lease) releases everything.
                LOG.debug("Sluice: releasing {} failed: {}", d.sluiceName(), e.toString());
            }
            for (JobState job : jobs.values()) {
                if (job.id.equals(d.jobId())) {
                    DatasetState ds = job.datasets.get(d.datasetId());
                    if (ds != null) {
                        ds.attempts.remove(key(d.mapIndex(), d.attempt()));
                        ds.committed.remove(key(d.mapIndex(), d.attempt()));
                    }
                }
            }
        });
    }

    // ------------------------------------------------------------------------- heartbeats, loss --

    private void heartbeat(JobState job) {
        if (job.closed) {
            return;
        }
        try {
            if (!job.registered) {
                registerJobAt(job);
                return;
            }
            JobHeartbeatResponse r = manager.job(s -> s.jobHeartbeat(
                    JobHeartbeatRequest.newBuilder().setJobId(job.id).setAckedEventSeq(job.ackedEventSeq).build()));
            if (r.getAction() == HeartbeatAction.HEARTBEAT_ACTION_REREGISTER) {
                reregister(job);
            }
            for (JobEvent ev : r.getEventsList()) {
                onEvent(job, ev);
                job.ackedEventSeq = Math.max(job.ackedEventSeq, ev.getSeq());
            }
            boolean poll = r.getEventsTruncated() || ++job.heartbeats % LOCATION_POLL_EVERY == 0 || !job.lost.isEmpty();
            if (poll) {
                pollLocations(job);
            }
            releaseExpiredLosses(job);
        } catch (StatusRuntimeException e) {
            LOG.warn("Sluice: heartbeat of job {} failed: {}", job.id, e.getStatus());
        } catch (RuntimeException e) {
            LOG.warn("Sluice: heartbeat of job {} failed", job.id, e);
        }
    }

    /** A new leader does not know the job: register it and its datasets again, with what is committed. */
    private void reregister(JobState job) {
        LOG.info("Sluice: the manager leader does not know job {}; registering it and its {} datasets again", job.id, job.datasets.size());
        registerJobAt(job);
        for (DatasetState ds : job.datasets.values()) {
            registerDataset(job, ds);
        }
    }

    private void onEvent(JobState job, JobEvent ev) {
        if (ev.getKind() == JobEventKind.PRODUCERS_LOST) {
            long at = System.nanoTime() + grace.toNanos();
            for (ProducerAttempt p : ev.getProducersList()) {
                ProducerKey k = new ProducerKey(ev.getDatasetId(), p.getMapIndex(), p.getAttempt());
                if (job.lost.putIfAbsent(k, at) == null) {
                    LOG.warn("Sluice: producer {} of job {} lost ({}); rerunning it in {} unless its data returns", k, job.id, ev.getReason(), grace);
                }
            }
        } else if (ev.getKind() == JobEventKind.PRODUCERS_RESTORED) {
            for (ProducerAttempt p : ev.getProducersList()) {
                if (job.lost.remove(new ProducerKey(ev.getDatasetId(), p.getMapIndex(), p.getAttempt())) != null) {
                    LOG.info("Sluice: producer {}/{}.{} of job {} is available again", ev.getDatasetId(), p.getMapIndex(), p.getAttempt(), job.id);
                }
            }
        }
    }

    /** Learns committed producers (for a re-registration) and lost ones (missed events) of each dataset. */
    private void pollLocations(JobState job) {
        for (DatasetState ds : job.datasets.values()) {
            if (ds.attempts.isEmpty()) {
                continue;
            }
            GetLocationsResponse r;
            try {
                r = manager.dataset(s -> s.getLocations(GetLocationsRequest.newBuilder().setJobId(job.id).setDatasetId(ds.id).build()));
            } catch (StatusRuntimeException e) {
                LOG.debug("Sluice: locations of {} failed: {}", ds.id, e.getStatus());
                continue;
            }
            ds.committed.clear();
            Set<ProducerKey> lostNow = new HashSet<>();
            for (MapLocation m : r.getMapsList()) {
                ds.committed.add(key(m.getMapIndex(), m.getAttempt()));
            }
            for (ProducerAttempt p : r.getLostList()) {
                ProducerKey k = new ProducerKey(ds.id, p.getMapIndex(), p.getAttempt());
                lostNow.add(k);
                if (ds.attempts.containsKey(key(p.getMapIndex(), p.getAttempt()))) {
                    job.lost.putIfAbsent(k, System.nanoTime() + grace.toNanos());
                }
            }
            // A producer waiting out its grace period that the manager no longer lists as lost came back.
            job.lost.keySet().removeIf(k -> k.dataset.equals(ds.id) && !lostNow.contains(k));
        }
    }

    private void releaseExpiredLosses(JobState job) {
        long now = System.nanoTime();
        List<ResultPartitionID> ids = new ArrayList<>();
        List<ProducerKey> keys = new ArrayList<>();
        for (Iterator<Map.Entry<ProducerKey, Long>> it = job.lost.entrySet().iterator(); it.hasNext(); ) {
            Map.Entry<ProducerKey, Long> e = it.next();
            if (e.getValue() - now > 0) {
                continue;
            }
            it.remove();
            DatasetState ds = job.datasets.get(e.getKey().dataset);
            ResultPartitionID id = ds == null ? null : ds.attempts.remove(key(e.getKey().map, e.getKey().attempt));
            if (id != null) {
                ids.add(id);
                keys.add(e.getKey());
                ds.committed.remove(key(e.getKey().map, e.getKey().attempt));
            }
        }
        if (ids.isEmpty()) {
            return;
        }
        LOG.warn("Sluice: job {}: producers {} lost their data; Flink stops tracking their partitions and reruns them", job.id, keys);
        PRODUCERS_RELEASED_AS_LOST.addAndGet(ids.size());
        stopTracking(job, ids, 3);
    }

    private void stopTracking(JobState job, Collection<ResultPartitionID> ids, int tries) {
        CompletableFuture<?> f;
        try {
            f = job.context.stopTrackingAndReleasePartitions(ids);
        } catch (RuntimeException e) {
            f = new CompletableFuture<>();
            f.completeExceptionally(e);
        }
        f.whenComplete((ok, err) -> {
            if (err != null && tries > 1 && !job.closed) {
                LOG.warn("Sluice: stopTrackingAndReleasePartitions failed; retrying", err);
                executor.schedule(() -> stopTracking(job, ids, tries - 1), 1, TimeUnit.SECONDS);
            } else if (err != null) {
                LOG.error("Sluice: could not make Flink release the lost partitions {}", ids, err);
            }
        });
    }

    // ----------------------------------------------------------------------------------- memory --

    @Override
    public MemorySize computeShuffleMemorySizeForTask(TaskInputsOutputsDescriptor desc) {
        for (ResultPartitionType t : desc.getPartitionTypes().values()) {
            if (!t.isBlockingOrBlockingPersistentResultPartition()) {
                throw new IllegalArgumentException("Sluice shuffles blocking partitions only, not " + t);
            }
        }
        int partitions = desc.getSubpartitionNums().size();
        int gates = desc.getInputGateNums();
        return new MemorySize(memoryPerPartition.getBytes() * partitions + memoryPerGate.getBytes() * gates);
    }
}
