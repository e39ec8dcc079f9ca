package io.sluice.flink;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.sluice.flink.shim.FlinkShim;
import io.sluice.flink.transport.DataClient;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Random;
import org.apache.flink.runtime.event.AbstractEvent;
import org.apache.flink.runtime.executiongraph.ExecutionAttemptID;
import org.apache.flink.runtime.io.network.api.EndOfData;
import org.apache.flink.runtime.io.network.api.EndOfPartitionEvent;
import org.apache.flink.runtime.io.network.api.StopMode;
import org.apache.flink.runtime.io.network.buffer.Buffer;
import org.apache.flink.runtime.io.network.buffer.NetworkBufferPool;
import org.apache.flink.runtime.io.network.partition.ResultPartitionID;
import org.apache.flink.runtime.io.network.partition.consumer.BufferOrEvent;
import org.apache.flink.runtime.jobgraph.IntermediateDataSetID;
import org.apache.flink.runtime.jobgraph.IntermediateResultPartitionID;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The result partition and the input gate against the real Go data plane (storage engine, read scheduler and
 * data server of netsvc/worktest, in a child process): records, broadcast records, empty and huge records,
 * events and subpartition ranges go through the worker's disk and come back exactly.
 */
class DataPlaneITCase {
    static GoProcess worker;
    static String address;
    static NetworkBufferPool pool;
    static DataClient client;

    @BeforeAll
    static void start(@TempDir Path dir) throws Exception {
        Path bin = GoProcess.build("dataworker", "./connectors/flink/src/test/go/dataworker");
        worker = new GoProcess("dataworker", null, bin.toString(), dir.toString());
        address = worker.await("addr ", 60_000);
        pool = new NetworkBufferPool(4096, 32 << 10, Duration.ofSeconds(10));
        client = new DataClient("data-plane-test", "", Duration.ofSeconds(10), 2);
    }

    @AfterAll
    static void stop() throws Exception {
        if (client != null) {
            client.close();
        }
        if (worker != null) {
            worker.process.getOutputStream().close();
            worker.close();
        }
        if (pool != null) {
            pool.destroy();
        }
    }

    static final IntermediateDataSetID DATASET = new IntermediateDataSetID();

    static SluiceShuffleDescriptor descriptor(int map, int attempt, int subs) {
        ResultPartitionID id = new ResultPartitionID(new IntermediateResultPartitionID(DATASET, map), ExecutionAttemptID.randomId());
        return new SluiceShuffleDescriptor(id, "job-data-plane", DATASET.toHexString(), map, attempt, 2, subs, false, "w", address, "d");
    }

    static ByteBuffer flinkRecord(byte[] data) {
        ByteBuffer b = ByteBuffer.allocate(4 + data.length);
        b.putInt(data.length).put(data).flip();
        return b;
    }

    /** What each producer wrote, per subpartition, in order; broadcast records under -1. */
    static Map<Integer, List<String>> produce(SluiceShuffleDescriptor d, int segments, long seed, int records, boolean huge) throws Exception {
        SluiceResultPartition p = new SluiceResultPartition("producer-" + d.mapIndex(), d.getResultPartitionID(), d, d.subpartitions(), 128, pool,
                segments, client, null, true, Duration.ofSeconds(30));
        p.setup();
        Map<Integer, List<String>> wrote = new HashMap<>();
        Random rnd = new Random(seed);
        for (int i = 0; i < records; i++) {
            String s;
            int kind = rnd.nextInt(100);
            if (kind == 0) {
                s = "";
            } else if (kind == 1) {
                // Larger than a 32 KiB buffer: fragments.
                StringBuilder sb = new StringBuilder();
                while (sb.length() < 100_000) {
                    sb.append("large record ").append(i).append(' ');
                }
                s = sb.toString();
            } else {
                s = "record " + d.mapIndex() + "." + i + " " + "x".repeat(rnd.nextInt(40));
            }
            if (kind == 2) {
                p.broadcastRecord(flinkRecord(s.getBytes(StandardCharsets.UTF_8)));
                for (int sub = 0; sub < d.subpartitions(); sub++) {
                    wrote.computeIfAbsent(sub, k -> new ArrayList<>()).add(s);
                }
                wrote.computeIfAbsent(-1, k -> new ArrayList<>()).add(s);
            } else {
                int sub = rnd.nextInt(d.subpartitions());
                p.emitRecord(flinkRecord(s.getBytes(StandardCharsets.UTF_8)), sub);
                wrote.computeIfAbsent(sub, k -> new ArrayList<>()).add(s);
            }
        }
        if (huge) {
            // A record larger than the whole sort buffer: a region of its own (of subpartition 0 only).
            byte[] big = new byte[segments * (32 << 10) + 12345];
            rnd.nextBytes(big);
            String bigS = new String(big, StandardCharsets.ISO_8859_1);
            p.emitRecord(flinkRecord(big), 0);
            wrote.computeIfAbsent(0, k -> new ArrayList<>()).add("HUGE:" + bigS.hashCode());
        }
        p.notifyEndOfData(StopMode.DRAIN);
        p.finish();
        p.close();
        return wrote;
    }

    /** Reads subpartitions [start, end) of the given producers; returns records per channel and events. */
    static List<List<String>> consume(SluiceShuffleDescriptor[] ds, int start, int end, List<AbstractEvent> events) throws Exception {
        int[][] ranges = new int[ds.length][];
        for (int i = 0; i < ds.length; i++) {
            ranges[i] = new int[] {start, end};
        }
        SluiceInputGate g = new SluiceInputGate("consumer", 0, DATASET, ds, ranges, pool, 64, 8, client, FlinkShim.load());
        g.setup();
        g.requestPartitions();
        List<java.io.ByteArrayOutputStream> bytes = new ArrayList<>();
        List<List<String>> out = new ArrayList<>();
        for (int i = 0; i < ds.length; i++) {
            bytes.add(new java.io.ByteArrayOutputStream());
            out.add(new ArrayList<>());
        }
        long deadline = System.currentTimeMillis() + 60_000;
        while (!g.isFinished()) {
            Optional<BufferOrEvent> boe = g.pollNext();
            if (!boe.isPresent()) {
                assertTrue(System.currentTimeMillis() < deadline, "timed out");
                try {
                    g.getAvailableFuture().get(20, java.util.concurrent.TimeUnit.SECONDS);
                } catch (java.util.concurrent.TimeoutException te) {
                    throw new AssertionError("gate stuck: " + g.state());
                }
                continue;
            }
            BufferOrEvent e = boe.get();
            int ch = e.getChannelInfo().getInputChannelIdx();
            if (e.isBuffer()) {
                Buffer b = e.getBuffer();
                byte[] data = new byte[b.readableBytes()];
                b.getNioBufferReadable().get(data);
                b.recycleBuffer();
                bytes.get(ch).write(data);
                // Parse whole records (Flink form: 4-byte length, bytes).
                byte[] all = bytes.get(ch).toByteArray();
                int pos = 0;
                while (all.length - pos >= 4) {
                    int len = ByteBuffer.wrap(all, pos, 4).getInt();
                    if (all.length - pos - 4 < len) {
                        break;
                    }
                    String s = new String(all, pos + 4, len, len > 200_000 ? StandardCharsets.ISO_8859_1 : StandardCharsets.UTF_8);
                    out.get(ch).add(len > 200_000 ? "HUGE:" + s.hashCode() : s);
                    pos += 4 + len;
                }
                java.io.ByteArrayOutputStream rest = new java.io.ByteArrayOutputStream();
                rest.write(all, pos, all.length - pos);
                bytes.set(ch, rest);
            } else {
                events.add(e.getEvent());
            }
        }
        assertEquals(PullingState.DRAINED, PullingState.of(g));
        g.close();
        return out;
    }

    enum PullingState {
        DRAINED, OTHER;

        static PullingState of(SluiceInputGate g) {
            return g.hasReceivedEndOfData() == org.apache.flink.runtime.io.PullingAsyncDataInput.EndOfDataStatus.DRAINED ? DRAINED : OTHER;
        }
    }

    @Test
    void recordsComeBackExactly() throws Exception {
        SluiceShuffleDescriptor d0 = descriptor(0, 0, 4);
        SluiceShuffleDescriptor d1 = descriptor(1, 3, 4);
        // 32 segments = 1 MiB of sort buffer: many regions.
        Map<Integer, List<String>> w0 = produce(d0, 32, 1, 60_000, false);
        Map<Integer, List<String>> w1 = produce(d1, 32, 2, 20_000, true);
        List<AbstractEvent> events = new ArrayList<>();
        List<List<String>> got = consume(new SluiceShuffleDescriptor[] {d0, d1}, 0, 4, events);
        same(sorted(all(w0, 0, 4)), sorted(got.get(0)));
        same(sorted(all(w1, 0, 4)), sorted(got.get(1)));
        long eops = events.stream().filter(e -> e instanceof EndOfPartitionEvent).count();
        long eods = events.stream().filter(e -> e instanceof EndOfData).count();
        assertEquals(2, eops);
        assertEquals(2, eods);
        RANGE_SOURCE = w0;
        RANGE_DESC = d0;
    }

    @Test
    void oneSubpartition() throws Exception {
        SluiceShuffleDescriptor d = descriptor(4, 0, 4);
        Map<Integer, List<String>> w = produce(d, 32, 5, 2_000, false);
        same(w.getOrDefault(3, List.of()), consume(new SluiceShuffleDescriptor[] {d}, 3, 4, new ArrayList<>()).get(0));
        same(w.getOrDefault(0, List.of()), consume(new SluiceShuffleDescriptor[] {d}, 0, 1, new ArrayList<>()).get(0));
    }

    static Map<Integer, List<String>> RANGE_SOURCE;
    static SluiceShuffleDescriptor RANGE_DESC;

    /**
     * Subpartition ranges: [1, 3), then [3, 4). Broadcast records come once per channel, not once per
     * subpartition; the records of one subpartition keep their order. (This hung until the worker learned to
     * send a READ_END that found its round full in the next round.)
     */
    @Test
    void subpartitionRanges() throws Exception {
        SluiceShuffleDescriptor d = descriptor(3, 0, 4);
        Map<Integer, List<String>> w = produce(d, 32, 4, 20_000, false);
        same(sorted(all(w, 1, 3)), sorted(consume(new SluiceShuffleDescriptor[] {d}, 1, 3, new ArrayList<>()).get(0)));
        same(w.getOrDefault(3, List.of()), consume(new SluiceShuffleDescriptor[] {d}, 3, 4, new ArrayList<>()).get(0));
    }

    /**
     * A range that has no data in some region (here the region of a huge record of subpartition 0).
     */
    @Test
    void rangeEmptyInSomeRegion() throws Exception {
        SluiceShuffleDescriptor d = descriptor(2, 0, 4);
        Map<Integer, List<String>> w = produce(d, 32, 3, 5_000, true);
        same(sorted(all(w, 1, 4)), sorted(consume(new SluiceShuffleDescriptor[] {d}, 1, 4, new ArrayList<>()).get(0)));
    }

    @Test
    void missingPartitionIsAPartitionException() throws Exception {
        SluiceShuffleDescriptor never = descriptor(7, 0, 4);
        IOException e = assertThrows(IOException.class, () -> consume(new SluiceShuffleDescriptor[] {never}, 0, 4, new ArrayList<>()));
        assertTrue(e instanceof org.apache.flink.runtime.io.network.partition.PartitionException, e.toString());
        assertTrue(e.toString().contains(never.getResultPartitionID().toString()) || e.getMessage().contains("7.0"), e.toString());
    }

    /** Equal lists, or a short message with the first difference (the lists are too long to print). */
    static void same(List<String> want, List<String> got) {
        for (int i = 0; i < Math.min(want.size(), got.size()); i++) {
            if (!want.get(i).equals(got.get(i))) {
                throw new AssertionError("element " + i + " of " + want.size() + "/" + got.size() + ": want " + abbrev(want.get(i)) + ", got " + abbrev(got.get(i)));
            }
        }
        if (want.size() != got.size()) {
            throw new AssertionError("want " + want.size() + " records, got " + got.size());
        }
    }

    static String abbrev(String s) {
        return s.length() > 80 ? s.substring(0, 80) + "...(" + s.length() + ")" : s;
    }

    /** A channel's records for subpartitions [start, end): broadcast records once, not once per subpartition. */
    static List<String> all(Map<Integer, List<String>> m, int start, int end) {
        List<String> l = new ArrayList<>();
        java.util.Set<String> bcast = new java.util.HashSet<>(m.getOrDefault(-1, List.of()));
        for (int sub = start; sub < end; sub++) {
            for (String s : m.getOrDefault(sub, List.of())) {
                if (!bcast.contains(s)) {
                    l.add(s);
                }
            }
        }
        l.addAll(m.getOrDefault(-1, List.of()));
        return l;
    }

    static List<String> sorted(List<String> l) {
        List<String> c = new ArrayList<>(l);
        c.sort(null);
        return c;
    }
}
