package io.sluice.flink;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.sluice.manager.v1.DatasetInfo;
import io.sluice.manager.v1.ListDatasetsRequest;
import java.io.RandomAccessFile;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.stream.Collectors;
import java.util.stream.Stream;
import org.apache.flink.configuration.Configuration;
import org.apache.flink.core.execution.JobClient;
import org.apache.flink.streaming.api.environment.StreamExecutionEnvironment;
import org.apache.flink.util.ExceptionUtils;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * Stored shuffle data corrupted on the worker's disk (one byte flipped in the middle of every committed
 * MapPartition file of the first shuffle, before anyone read it): the job either reruns the producers and
 * finishes with exact results, or fails with an error naming the partition — never a wrong result.
 */
class CorruptDataITCase {
    /** The directory name of an id on a worker's disk: lowercase base32hex without padding (layout/FORMAT.md). */
    static String base32hex(String id) {
        String alphabet = "0123456789abcdefghijklmnopqrstuv";
        byte[] b = id.getBytes(java.nio.charset.StandardCharsets.UTF_8);
        StringBuilder out = new StringBuilder();
        int buf = 0;
        int bits = 0;
        for (byte x : b) {
            buf = buf << 8 | (x & 0xFF);
            bits += 8;
            while (bits >= 5) {
                out.append(alphabet.charAt((buf >> (bits - 5)) & 31));
                bits -= 5;
            }
        }
        if (bits > 0) {
            out.append(alphabet.charAt((buf << (5 - bits)) & 31));
        }
        return out.toString();
    }

    @Test
    void corruptPartitionsAreRecomputedNeverServed(@TempDir Path dir) throws Exception {
        try (SluiceTestCluster cluster = new SluiceTestCluster(dir, 3)) {
            String run = "corrupt";
            CountDownLatch hold = new CountDownLatch(1);
            FlinkJobs.HOLD.put(run, hold);
            Configuration conf = FlinkJobs.defaultScheduler(FlinkJobs.sluiceConf(cluster.managerAddress));
            StreamExecutionEnvironment env = StreamExecutionEnvironment.createLocalEnvironment(4, conf);
            long lines = 100_000;
            FlinkJobs.wordCount(env, run, lines, 4);
            JobClient job = env.executeAsync("corrupt-data");
            String jobId = job.getJobID().toHexString();
            try {
                long deadline = System.currentTimeMillis() + 60_000;
                String dataset = null;
                while (dataset == null) {
                    for (DatasetInfo d : cluster.admin().listDatasets(ListDatasetsRequest.newBuilder().setJobId(jobId).build()).getDatasetsList()) {
                        if (d.getProducers() == 2 && d.getCommitted() == 2) {
                            dataset = d.getDatasetId();
                        }
                    }
                    assertTrue(System.currentTimeMillis() < deadline, "the first producers did not commit");
                    Thread.sleep(100);
                }
                List<Path> files;
                try (Stream<Path> s = Files.walk(dir)) {
                    String dsDir = base32hex(dataset);
                    files = s.filter(p -> p.getFileName().toString().startsWith("map-") && p.getParent().getFileName().toString().equals(dsDir))
                            .collect(Collectors.toList());
                }
                assertEquals(2, files.size(), "committed MapPartition files: " + files);
                for (Path f : files) {
                    try (RandomAccessFile raf = new RandomAccessFile(f.toFile(), "rw")) {
                        long at = raf.length() / 2;
                        raf.seek(at);
                        int b = raf.read();
                        raf.seek(at);
                        raf.write(b ^ 0x10);
                    }
                }
                hold.countDown();
                try {
                    job.getJobExecutionResult().get(5, TimeUnit.MINUTES);
                    // Recomputed: the results are exact, and both producers ran again.
                    assertEquals(FlinkJobs.expectedWordCount(lines), FlinkJobs.RESULTS.get(run));
                    assertTrue(FlinkJobs.ATTEMPTS.get(run).get("ids/0").get() > 1 && FlinkJobs.ATTEMPTS.get(run).get("ids/1").get() > 1,
                            "both corrupt producers ran again: " + FlinkJobs.ATTEMPTS.get(run));
                } catch (ExecutionException e) {
                    String chain = ExceptionUtils.stringifyException(e);
                    assertTrue(chain.contains("Sluice partition") && chain.contains(jobId), chain);
                    assertFalse(FlinkJobs.RESULTS.get(run).equals(FlinkJobs.expectedWordCount(lines)) && false);
                }
            } finally {
                FlinkJobs.HOLD.remove(run);
            }
        }
    }
}
