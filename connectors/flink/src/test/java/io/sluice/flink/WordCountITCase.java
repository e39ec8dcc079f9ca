package io.sluice.flink;

import static org.junit.jupiter.api.Assertions.assertEquals;

import java.nio.file.Path;
import java.util.Map;
import org.apache.flink.configuration.Configuration;
import org.apache.flink.streaming.api.environment.StreamExecutionEnvironment;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** Real Flink batch jobs on a MiniCluster, shuffling through a real Sluice cluster (manager + 3 workers). */
class WordCountITCase {
    static SluiceTestCluster cluster;

    @BeforeAll
    static void start(@TempDir Path dir) throws Exception {
        cluster = new SluiceTestCluster(dir, 3);
    }

    @AfterAll
    static void stop() throws Exception {
        if (cluster != null) {
            cluster.close();
        }
    }

    @Test
    void wordCountWithBroadcastAndKeyBy() throws Exception {
        Configuration conf = FlinkJobs.defaultScheduler(FlinkJobs.sluiceConf(cluster.managerAddress));
        StreamExecutionEnvironment env = StreamExecutionEnvironment.createLocalEnvironment(4, conf);
        long lines = 200_000;
        FlinkJobs.wordCount(env, "wc", lines, 4);
        env.execute("wordcount-on-sluice");
        Map<String, Long> want = FlinkJobs.expectedWordCount(lines);
        assertEquals(want, FlinkJobs.RESULTS.get("wc"));
    }
}
