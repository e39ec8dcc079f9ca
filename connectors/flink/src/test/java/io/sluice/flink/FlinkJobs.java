package io.sluice.flink;

import java.time.Duration;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.AtomicLong;
import org.apache.flink.api.common.BatchShuffleMode;
import org.apache.flink.api.common.RuntimeExecutionMode;
import org.apache.flink.api.common.functions.FlatMapFunction;
import org.apache.flink.api.common.functions.RichMapFunction;
import org.apache.flink.api.java.tuple.Tuple2;
import org.apache.flink.configuration.Configuration;
import org.apache.flink.configuration.ExecutionOptions;
import org.apache.flink.configuration.JobManagerOptions;
import org.apache.flink.configuration.MemorySize;
import org.apache.flink.configuration.RestartStrategyOptions;
import org.apache.flink.runtime.shuffle.ShuffleServiceOptions;
import org.apache.flink.configuration.TaskManagerOptions;
import org.apache.flink.streaming.api.datastream.DataStream;
import org.apache.flink.streaming.api.environment.StreamExecutionEnvironment;
import org.apache.flink.streaming.api.functions.sink.SinkFunction;
import org.apache.flink.util.Collector;

/** The Flink jobs of the integration tests and the benchmark, and the configuration that puts them on Sluice. */
final class FlinkJobs {
    private FlinkJobs() {}

    /** A MiniCluster configuration: BATCH, blocking exchanges, the Sluice shuffle service at the given manager. */
    static Configuration sluiceConf(String managerAddress) {
        Configuration c = baseConf();
        c.set(ShuffleServiceOptions.SHUFFLE_SERVICE_FACTORY_CLASS, SluiceShuffleServiceFactory.class.getName());
        c.set(SluiceOptions.MANAGER_ADDRESSES, List.of(managerAddress));
        c.set(SluiceOptions.MEMORY_PER_PARTITION, MemorySize.parse("8m"));
        c.set(SluiceOptions.MEMORY_PER_GATE, MemorySize.parse("4m"));
        c.set(SluiceOptions.WORKER_LOSS_GRACE, Duration.ofSeconds(1));
        c.set(SluiceOptions.RPC_TIMEOUT, Duration.ofSeconds(20));
        return c;
    }

    static Configuration baseConf() {
        Configuration c = new Configuration();
        c.set(ExecutionOptions.RUNTIME_MODE, RuntimeExecutionMode.BATCH);
        c.set(ExecutionOptions.BATCH_SHUFFLE_MODE, BatchShuffleMode.ALL_EXCHANGES_BLOCKING);
        c.set(TaskManagerOptions.NUM_TASK_SLOTS, 8);
        c.set(TaskManagerOptions.NETWORK_MEMORY_MIN, MemorySize.parse("256m"));
        c.set(TaskManagerOptions.NETWORK_MEMORY_MAX, MemorySize.parse("256m"));
        c.set(RestartStrategyOptions.RESTART_STRATEGY, "fixed-delay");
        c.set(RestartStrategyOptions.RESTART_STRATEGY_FIXED_DELAY_ATTEMPTS, 100);
        c.set(RestartStrategyOptions.RESTART_STRATEGY_FIXED_DELAY_DELAY, Duration.ofMillis(300));
        return c;
    }

    static Configuration defaultScheduler(Configuration c) {
        c.set(JobManagerOptions.SCHEDULER, JobManagerOptions.SchedulerType.Default);
        return c;
    }

    // --------------------------------------------------------------------------------- WordCount --

    static final Map<String, Map<String, Long>> RESULTS = new ConcurrentHashMap<>();
    /** Attempts of each producer subtask (run id → "vertex/subtask" → attempts seen), to tell reruns. */
    static final Map<String, Map<String, AtomicLong>> ATTEMPTS = new ConcurrentHashMap<>();

    static String line(long i) {
        return "w" + (i % 17) + " w" + (i % 5) + " common " + (i % 3 == 0 ? "fizz" : "buzz" + (i % 101));
    }

    static Map<String, Long> expectedWordCount(long lines) {
        Map<String, Long> m = new HashMap<>();
        for (long i = 0; i < lines; i++) {
            for (String w : line(i).split(" ")) {
                m.merge(w, 1L, Long::sum);
            }
        }
        return m;
    }

    /**
     * WordCount with a broadcast edge: line ids are broadcast to every line maker, each of which keeps the
     * ids that are its own (so every line is made once); words are counted with keyBy and sum.
     */
    static void wordCount(StreamExecutionEnvironment env, String run, long lines, int parallelism) {
        RESULTS.put(run, new ConcurrentHashMap<>());
        DataStream<Long> ids = env.fromSequence(0, lines - 1).setParallelism(2).name("ids")
                .map(new Tag<Long>(run, "ids")).setParallelism(2).name("ids-tag");
        ids.broadcast()
                .map(new LineMaker(run)).setParallelism(parallelism).name("lines")
                .flatMap((FlatMapFunction<String, Tuple2<String, Long>>) (l, out) -> {
                    for (String w : l.split(" ")) {
                        if (!w.isEmpty()) {
                            out.collect(Tuple2.of(w, 1L));
                        }
                    }
                })
                .returns(org.apache.flink.api.common.typeinfo.Types.TUPLE(org.apache.flink.api.common.typeinfo.Types.STRING,
                        org.apache.flink.api.common.typeinfo.Types.LONG))
                .setParallelism(parallelism).name("words")
                .keyBy(t -> t.f0)
                .sum(1).setParallelism(parallelism).name("counts")
                .addSink(new ResultSink(run)).setParallelism(parallelism).name("results");
    }

    /** Parallelism the operators ran with (run/vertex → subtasks), as decided by the adaptive scheduler. */
    static final Map<String, Integer> PARALLELISM = new ConcurrentHashMap<>();

    /** WordCount without fixed parallelism (but for the source): the adaptive batch scheduler decides. */
    static void wordCountAdaptive(StreamExecutionEnvironment env, String run, long lines) {
        RESULTS.put(run, new ConcurrentHashMap<>());
        env.fromSequence(0, lines - 1).setParallelism(4).name("ids")
                .flatMap((FlatMapFunction<Long, Tuple2<String, Long>>) (id, out) -> {
                    for (String w : line(id).split(" ")) {
                        out.collect(Tuple2.of(w, 1L));
                    }
                })
                .returns(org.apache.flink.api.common.typeinfo.Types.TUPLE(org.apache.flink.api.common.typeinfo.Types.STRING,
                        org.apache.flink.api.common.typeinfo.Types.LONG))
                .setParallelism(4).name("words")
                .keyBy(t -> t.f0)
                .sum(1).name("counts")
                .map(new ParallelismProbe<>(run, "counts")).name("probe")
                .addSink(new ResultSink(run)).name("results");
    }

    static final class ParallelismProbe<T> extends RichMapFunction<T, T> {
        private static final long serialVersionUID = 1L;
        final String run;
        final String vertex;

        ParallelismProbe(String run, String vertex) {
            this.run = run;
            this.vertex = vertex;
        }

        @Override
        public void open(org.apache.flink.api.common.functions.OpenContext ctx) {
            PARALLELISM.put(run + "/" + vertex, getRuntimeContext().getTaskInfo().getNumberOfParallelSubtasks());
        }

        @Override
        public T map(T v) {
            return v;
        }
    }

    /** Keeps the broadcast ids of its own subtask and turns them into lines (null stands for "not mine"). */
    static final class LineMaker extends RichMapFunction<Long, String> {
        private static final long serialVersionUID = 1L;
        final String run;

        LineMaker(String run) {
            this.run = run;
        }

        @Override
        public void open(org.apache.flink.api.common.functions.OpenContext ctx) throws Exception {
            recordAttempt(run, "lines", getRuntimeContext().getTaskInfo().getIndexOfThisSubtask(),
                    getRuntimeContext().getTaskInfo().getAttemptNumber());
            java.util.concurrent.CountDownLatch hold = HOLD.get(run);
            if (hold != null && getRuntimeContext().getTaskInfo().getAttemptNumber() == 0) {
                // The test kills a worker while the first consumers wait here.
                hold.await();
            }
        }

        @Override
        public String map(Long id) {
            int n = getRuntimeContext().getTaskInfo().getNumberOfParallelSubtasks();
            return id % n == getRuntimeContext().getTaskInfo().getIndexOfThisSubtask() ? line(id) : "";
        }
    }

    /** Consumers of the broadcast edge wait on this (first attempt only) when a test sets it. */
    static final Map<String, java.util.concurrent.CountDownLatch> HOLD = new ConcurrentHashMap<>();

    /** Records the attempts of the task it is chained into. */
    static final class Tag<T> extends RichMapFunction<T, T> {
        private static final long serialVersionUID = 1L;
        final String run;
        final String vertex;

        Tag(String run, String vertex) {
            this.run = run;
            this.vertex = vertex;
        }

        @Override
        public void open(org.apache.flink.api.common.functions.OpenContext ctx) {
            recordAttempt(run, vertex, getRuntimeContext().getTaskInfo().getIndexOfThisSubtask(),
                    getRuntimeContext().getTaskInfo().getAttemptNumber());
        }

        @Override
        public T map(T v) {
            return v;
        }
    }

    static void recordAttempt(String run, String vertex, int subtask, int attempt) {
        ATTEMPTS.computeIfAbsent(run, k -> new ConcurrentHashMap<>())
                .computeIfAbsent(vertex + "/" + subtask, k -> new AtomicLong()).accumulateAndGet(attempt + 1, Math::max);
    }

    static final class ResultSink implements SinkFunction<Tuple2<String, Long>> {
        private static final long serialVersionUID = 1L;
        final String run;

        ResultSink(String run) {
            this.run = run;
        }

        @Override
        public void invoke(Tuple2<String, Long> v, Context ctx) {
            // A rerun consumer writes its keys again with the same totals: put, not add.
            RESULTS.get(run).put(v.f0, v.f1);
        }
    }

    static final class Noop implements Collector<Object> {
        @Override
        public void collect(Object record) {}

        @Override
        public void close() {}
    }
}
