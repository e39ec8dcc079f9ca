package io.sluice.flink;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Path;
import org.apache.flink.configuration.BatchExecutionOptions;
import org.apache.flink.configuration.Configuration;
import org.apache.flink.configuration.CoreOptions;
import org.apache.flink.configuration.JobManagerOptions;
import org.apache.flink.configuration.MemorySize;
import org.apache.flink.streaming.api.environment.StreamExecutionEnvironment;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The adaptive batch scheduler decides the consumers' parallelism from the bytes each producer reports per
 * subpartition, and gives each consumer a range of subpartitions: every read is a Sluice range read.
 */
class AdaptiveBatchITCase {
    @Test
    void adaptiveParallelismReadsSubpartitionRanges(@TempDir Path dir) throws Exception {
        try (SluiceTestCluster cluster = new SluiceTestCluster(dir, 3)) {
            Configuration conf = FlinkJobs.sluiceConf(cluster.managerAddress);
            conf.set(JobManagerOptions.SCHEDULER, JobManagerOptions.SchedulerType.AdaptiveBatch);
            conf.set(BatchExecutionOptions.ADAPTIVE_AUTO_PARALLELISM_MAX_PARALLELISM, 8);
            conf.set(BatchExecutionOptions.ADAPTIVE_AUTO_PARALLELISM_MIN_PARALLELISM, 1);
            conf.set(BatchExecutionOptions.ADAPTIVE_AUTO_PARALLELISM_AVG_DATA_VOLUME_PER_TASK, MemorySize.parse("1m"));
            conf.set(CoreOptions.DEFAULT_PARALLELISM, -1);
            StreamExecutionEnvironment env = StreamExecutionEnvironment.createLocalEnvironment(conf);
            long lines = 100_000;
            FlinkJobs.wordCountAdaptive(env, "adaptive", lines);
            env.execute("adaptive-on-sluice");
            assertEquals(FlinkJobs.expectedWordCount(lines), FlinkJobs.RESULTS.get("adaptive"));
            // The scheduler chose fewer consumers than subpartitions: some consumers read ranges.
            int counters = FlinkJobs.PARALLELISM.getOrDefault("adaptive/counts", 0);
            assertTrue(counters >= 1 && counters < 8, "consumer parallelism " + counters);
        }
    }
}
