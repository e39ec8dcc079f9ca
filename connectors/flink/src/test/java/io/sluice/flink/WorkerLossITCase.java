package io.sluice.flink;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.grpc.ManagedChannel;
import io.grpc.netty.NettyChannelBuilder;
import io.sluice.manager.v1.DatasetInfo;
import io.sluice.manager.v1.DatasetServiceGrpc;
import io.sluice.manager.v1.GetLocationsRequest;
import io.sluice.manager.v1.GetLocationsResponse;
import io.sluice.manager.v1.ListDatasetsRequest;
import io.sluice.manager.v1.MapLocation;
import java.nio.file.Path;
import java.util.HashMap;
import java.util.HashSet;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import org.apache.flink.configuration.Configuration;
import org.apache.flink.core.execution.JobClient;
import org.apache.flink.streaming.api.environment.StreamExecutionEnvironment;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * A Sluice worker killed with SIGKILL in the middle of a job: after the producers of the first shuffle have
 * committed and before their consumers read, the worker holding some of their partitions dies. The job
 * finishes with exact results, and exactly the producers whose data was on that worker ran again (counted
 * from the attempt numbers Flink gives the producer subtasks).
 */
class WorkerLossITCase {
    @Test
    void onlyTheLostProducersRerun(@TempDir Path dir) throws Exception {
        try (SluiceTestCluster cluster = new SluiceTestCluster(dir, 3)) {
            String run = "loss";
            CountDownLatch hold = new CountDownLatch(1);
            FlinkJobs.HOLD.put(run, hold);
            Configuration conf = FlinkJobs.defaultScheduler(FlinkJobs.sluiceConf(cluster.managerAddress));
            StreamExecutionEnvironment env = StreamExecutionEnvironment.createLocalEnvironment(4, conf);
            long lines = 100_000;
            FlinkJobs.wordCount(env, run, lines, 4);
            JobClient job = env.executeAsync("worker-loss");
            String jobId = job.getJobID().toHexString();

            // Wait until the two producers of the first dataset (ids -> lines) have committed.
            ManagedChannel ch = NettyChannelBuilder.forTarget(cluster.managerAddress).usePlaintext().build();
            try {
                DatasetInfo first = null;
                long deadline = System.currentTimeMillis() + 60_000;
                while (first == null) {
                    for (DatasetInfo d : cluster.admin().listDatasets(ListDatasetsRequest.newBuilder().setJobId(jobId).build()).getDatasetsList()) {
                        if (d.getProducers() == 2 && d.getCommitted() == 2) {
                            first = d;
                        }
                    }
                    assertTrue(System.currentTimeMillis() < deadline, "the first producers did not commit");
                    Thread.sleep(100);
                }
                GetLocationsResponse loc = DatasetServiceGrpc.newBlockingStub(ch).withDeadlineAfter(10, TimeUnit.SECONDS)
                        .getLocations(GetLocationsRequest.newBuilder().setJobId(jobId).setDatasetId(first.getDatasetId()).build());
                Map<String, Set<Integer>> mapsByWorker = new HashMap<>();
                for (MapLocation m : loc.getMapsList()) {
                    mapsByWorker.computeIfAbsent(loc.getLocations((int) m.getLocation()).getWorkerId(), k -> new HashSet<>()).add((int) m.getMapIndex());
                }
                // Kill a worker that holds some, not necessarily all, of the partitions.
                String victim = mapsByWorker.keySet().iterator().next();
                Set<Integer> lost = mapsByWorker.get(victim);
                for (SluiceTestCluster.Worker w : cluster.workers) {
                    if (w.id.equals(victim)) {
                        w.kill();
                    }
                }
                hold.countDown();
                job.getJobExecutionResult().get(5, TimeUnit.MINUTES);

                assertEquals(FlinkJobs.expectedWordCount(lines), FlinkJobs.RESULTS.get(run));
                Map<String, AtomicLong> attempts = FlinkJobs.ATTEMPTS.get(run);
                Set<Integer> rerun = new HashSet<>();
                for (int sub = 0; sub < 2; sub++) {
                    if (attempts.get("ids/" + sub).get() > 1) {
                        rerun.add(sub);
                    }
                }
                assertFalse(lost.isEmpty());
                assertEquals(lost, rerun, "producers rerun (their partitions were on " + victim + ": " + mapsByWorker + ")");
            } finally {
                ch.shutdownNow();
                FlinkJobs.HOLD.remove(run);
            }
        }
    }
}
