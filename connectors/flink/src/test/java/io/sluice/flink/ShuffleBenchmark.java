package io.sluice.flink;

import static org.junit.jupiter.api.Assertions.assertEquals;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.AtomicLong;
import org.apache.flink.api.common.functions.MapFunction;
import org.apache.flink.api.common.typeinfo.Types;
import org.apache.flink.api.java.tuple.Tuple2;
import org.apache.flink.configuration.Configuration;
import org.apache.flink.streaming.api.environment.StreamExecutionEnvironment;
import org.apache.flink.streaming.api.functions.sink.SinkFunction;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The same shuffle-heavy Flink batch job with Flink's own blocking shuffle and with Sluice, alternating, in
 * one run: {@code sluice.bench.records} records of about 100 bytes (a long key, a 90-character value)
 * shuffled by key over 8 consumers that count and sum them. Not an integration test (its name keeps it out
 * of surefire and failsafe); run it with
 *
 * <pre>mvn -B verify -Dtest=none -Dsurefire.failIfNoSpecifiedTests=false -Dit.test=ShuffleBenchmark</pre>
 */
class ShuffleBenchmark {
    static final ConcurrentHashMap<String, AtomicLong> COUNTS = new ConcurrentHashMap<>();
    static final ConcurrentHashMap<String, AtomicLong> SUMS = new ConcurrentHashMap<>();

    @Test
    void flinkBlockingShuffleVersusSluice(@TempDir Path dir) throws Exception {
        long records = Long.getLong("sluice.bench.records", 3_000_000L);
        int runs = Integer.getInteger("sluice.bench.runs", 3);
        List<Double> flink = new ArrayList<>(), sluice = new ArrayList<>(), ratios = new ArrayList<>();
        try (SluiceTestCluster cluster = new SluiceTestCluster(dir, 3)) {
            for (int i = 0; i < runs; i++) {
                boolean sluiceFirst = i % 2 == 1;
                double a = 0, b = 0;
                for (int side = 0; side < 2; side++) {
                    boolean onSluice = (side == 0) == sluiceFirst;
                    Configuration conf = onSluice ? FlinkJobs.sluiceConf(cluster.managerAddress) : FlinkJobs.baseConf();
                    double s = run(conf, (onSluice ? "sluice-" : "flink-") + i, records);
                    if (onSluice) {
                        b = s;
                    } else {
                        a = s;
                    }
                }
                flink.add(a);
                sluice.add(b);
                ratios.add(b / a);
                System.out.printf("run %d (%s first): Flink blocking shuffle %.2f s, Sluice %.2f s, Sluice/Flink %.2f%n",
                        i + 1, sluiceFirst ? "Sluice" : "Flink", a, b, b / a);
            }
        }
        System.out.printf("median of %d: %d records (~%d MiB shuffled): Flink blocking shuffle %.2f s, Sluice %.2f s, time ratio Sluice/Flink %.2f%n",
                runs, records, records * 100 >> 20, median(flink), median(sluice), median(ratios));
    }

    /** Runs the job once and returns its wall time in seconds, after checking its result. */
    static double run(Configuration conf, String run, long records) throws Exception {
        COUNTS.put(run, new AtomicLong());
        SUMS.put(run, new AtomicLong());
        StreamExecutionEnvironment env = StreamExecutionEnvironment.createLocalEnvironment(conf);
        env.fromSequence(0, records - 1).setParallelism(4).name("source")
                .map((MapFunction<Long, Tuple2<Long, String>>) i -> Tuple2.of(i * 0x9E3779B97F4A7C15L, payload(i)))
                .returns(Types.TUPLE(Types.LONG, Types.STRING)).setParallelism(4).name("records")
                .keyBy(t -> t.f0 & 1023)
                .map((MapFunction<Tuple2<Long, String>, Long>) t -> (long) t.f1.length()).returns(Types.LONG).setParallelism(8).name("consume")
                .addSink(new Tally(run)).setParallelism(8).name("tally");
        long t0 = System.nanoTime();
        env.execute(run);
        double seconds = (System.nanoTime() - t0) / 1e9;
        assertEquals(records, COUNTS.get(run).get(), "records consumed");
        assertEquals(records * 90, SUMS.get(run).get(), "payload bytes consumed");
        return seconds;
    }

    static String payload(long i) {
        StringBuilder b = new StringBuilder(90);
        long x = i;
        while (b.length() < 90) {
            b.append((char) ('a' + (x & 15)));
            x = x * 6364136223846793005L + 1442695040888963407L;
            b.append((char) ('a' + ((x >>> 60) & 15)));
        }
        b.setLength(90);
        return b.toString();
    }

    static double median(List<Double> xs) {
        List<Double> s = new ArrayList<>(xs);
        Collections.sort(s);
        int n = s.size();
        return n % 2 == 1 ? s.get(n / 2) : (s.get(n / 2 - 1) + s.get(n / 2)) / 2;
    }

    static final class Tally implements SinkFunction<Long> {
        private static final long serialVersionUID = 1L;
        final String run;

        Tally(String run) {
            this.run = run;
        }

        @Override
        public void invoke(Long len, Context ctx) {
            COUNTS.get(run).incrementAndGet();
            SUMS.get(run).addAndGet(len);
        }
    }
}
