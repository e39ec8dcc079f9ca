package io.sluice.flink.protocol;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.List;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import java.util.stream.Collectors;
import java.util.stream.Stream;
import net.jpountz.lz4.LZ4Factory;
import net.jpountz.lz4.LZ4SafeDecompressor;
import org.junit.jupiter.api.DynamicTest;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestFactory;

/**
 * The shared golden vectors of {@code testdata/protocol/}: every valid frame decodes and re-encodes byte for
 * byte, the data frames' payloads decompress to the records their description lists, and every invalid
 * frame is answered with the code, channel and fatality its description gives — as the Go tests do.
 */
class GoldenVectorsTest {
    static final Path DIR = Paths.get(System.getProperty("sluice.repo", "../.."), "testdata", "protocol").toAbsolutePath().normalize();
    static final LZ4SafeDecompressor LZ4 = LZ4Factory.fastestInstance().safeDecompressor();

    static List<Path> bins(Path dir) throws IOException {
        try (Stream<Path> s = Files.list(dir)) {
            return s.filter(p -> p.toString().endsWith(".bin")).sorted().collect(Collectors.toList());
        }
    }

    @Test
    void everyMessageTypeHasAVector() throws IOException {
        List<String> names = new ArrayList<>();
        for (Path p : bins(DIR)) {
            names.add(p.getFileName().toString());
        }
        assertTrue(names.size() >= 35, "found " + names.size() + " vectors in " + DIR);
        // Each type of the catalogue appears in at least one valid vector.
        java.util.EnumSet<MessageType> seen = java.util.EnumSet.noneOf(MessageType.class);
        for (Path p : bins(DIR)) {
            byte[] b = Files.readAllBytes(p);
            seen.add(MessageType.of(b[1] & 0xFF));
        }
        assertEquals(java.util.EnumSet.allOf(MessageType.class), seen);
    }

    @TestFactory
    List<DynamicTest> validVectorsRoundTrip() throws IOException {
        List<DynamicTest> tests = new ArrayList<>();
        for (Path p : bins(DIR)) {
            tests.add(DynamicTest.dynamicTest(p.getFileName().toString(), () -> roundTrip(p)));
        }
        return tests;
    }

    static void roundTrip(Path p) throws Exception {
        byte[] raw = Files.readAllBytes(p);
        String txt = Files.readString(Paths.get(p.toString().replace(".bin", ".txt")), StandardCharsets.UTF_8);
        MessageType t = MessageType.of(raw[1] & 0xFF);
        assertNotNull(t, "type of " + p);
        int major = raw[0] & 0xFF;
        // The receiver is the side that does not send the type (a client for types both sides send, since
        // ERROR on a channel reaches only clients).
        boolean receiverIsServer = t.sender() == MessageType.Sender.CLIENT;
        FrameHeader.Rules rules = new FrameHeader.Rules(receiverIsServer, major == 0 ? 0 : 1, Wire.DEFAULT_FRAME_LIMIT);
        ByteBuffer in = ByteBuffer.wrap(raw);
        Frames.Frame f = Frames.decode(in, rules);
        assertFalse(in.hasRemaining(), "bytes after the frame");
        ByteBuffer out = f.message.encodeFrame(f.header.version, f.header.channel);
        byte[] re = new byte[out.remaining()];
        out.get(re);
        assertArrayEquals(raw, re, "re-encoded " + p.getFileName());
        if (t.isData()) {
            checkRecords(f, txt);
        }
    }

    static final Pattern ENTRY = Pattern.compile(
            "entry (\\d+) at uncompressed offset (\\d+): (record|fragment \\(continues\\)) of (\\d+) bytes: (\"(.*?)\"(…)?|([0-9a-f]*)(…)?)$");

    /** Decompresses every stored item of a data frame and compares its entries with the description's. */
    static void checkRecords(Frames.Frame f, String txt) throws Exception {
        List<String> want = new ArrayList<>();
        for (String line : txt.split("\n")) {
            Matcher m = ENTRY.matcher(line.trim());
            if (m.find()) {
                want.add(line.trim());
            }
        }
        ByteBuffer stored;
        switch (f.header.type) {
            case WRITE_DATA: stored = ((Message.WriteData) f.message).stored; break;
            case PUSH_DATA: stored = ((Message.PushData) f.message).stored; break;
            default: stored = ((Message.ReadData) f.message).stored; break;
        }
        List<String> got = new ArrayList<>();
        List<String> problems = new ArrayList<>();
        Frames.forEachItem(stored, (sh, payload) -> {
            byte[] un = new byte[sh.uncompressedLength];
            byte[] pay = new byte[payload.remaining()];
            payload.duplicate().get(pay);
            if (sh.codec == Wire.CODEC_LZ4) {
                int n = LZ4.decompress(pay, 0, pay.length, un, 0, un.length);
                if (n != un.length) {
                    problems.add("LZ4 decoded " + n + " bytes, want " + un.length);
                }
            } else {
                un = pay;
            }
            int off = 0;
            int i = 0;
            while (off < un.length) {
                long h = Records.readHeader(un, off, un.length);
                if (h < 0) {
                    problems.add("bad entry header at " + off);
                    return;
                }
                int hl = (int) (h & 7);
                long v = h >>> 3;
                int len = (int) (v >>> 1);
                boolean more = (v & 1) != 0;
                got.add(i + "|" + off + "|" + (more ? "fragment" : "record") + "|" + len + "|"
                        + new String(un, off + hl, len, StandardCharsets.ISO_8859_1));
                off += hl + len;
                i++;
            }
        });
        assertTrue(problems.isEmpty(), problems.toString());
        assertEquals(want.size(), got.size(), "entries: " + got);
        for (int k = 0; k < want.size(); k++) {
            Matcher m = ENTRY.matcher(want.get(k));
            assertTrue(m.find());
            String[] g = got.get(k).split("\\|", 5);
            assertEquals(m.group(1), g[0], want.get(k));
            assertEquals(m.group(2), g[1], want.get(k));
            assertEquals(m.group(3).startsWith("fragment") ? "fragment" : "record", g[2], want.get(k));
            assertEquals(m.group(4), g[3], want.get(k));
            String data = g[4];
            if (m.group(6) != null) {
                String text = m.group(6);
                if (!text.contains("\\")) {
                    assertTrue(data.startsWith(text), "record text " + data + " vs " + text);
                    if (m.group(7) == null) {
                        assertEquals(text, data);
                    }
                }
            } else if (m.group(8) != null) {
                StringBuilder hex = new StringBuilder();
                for (char c : data.toCharArray()) {
                    hex.append(String.format("%02x", (int) c & 0xFF));
                }
                assertTrue(hex.toString().startsWith(m.group(8)), "record bytes " + hex + " vs " + m.group(8));
            }
        }
    }

    static final Pattern EXPECT = Pattern.compile(
            "^expect: (\\w+) channel (\\d+) (fatal|not fatal); receiver (server|client), negotiated major (\\d+)");

    @TestFactory
    List<DynamicTest> invalidVectorsAreRefused() throws IOException {
        List<DynamicTest> tests = new ArrayList<>();
        Path inv = DIR.resolve("invalid");
        for (Path p : bins(inv)) {
            tests.add(DynamicTest.dynamicTest(p.getFileName().toString(), () -> refuse(p)));
        }
        assertTrue(tests.size() >= 23, "found " + tests.size() + " invalid vectors");
        return tests;
    }

    static void refuse(Path p) throws Exception {
        byte[] raw = Files.readAllBytes(p);
        String first = Files.readAllLines(Paths.get(p.toString().replace(".bin", ".txt")), StandardCharsets.UTF_8).get(0);
        Matcher m = EXPECT.matcher(first);
        assertTrue(m.find(), first);
        FrameHeader.Rules rules = new FrameHeader.Rules(m.group(4).equals("server"), Integer.parseInt(m.group(5)), Wire.DEFAULT_FRAME_LIMIT);
        try {
            decodeAsReceiver(ByteBuffer.wrap(raw), rules);
            fail(p.getFileName() + " was accepted");
        } catch (WireException e) {
            assertEquals(m.group(1), ErrorCode.name(e.code()), e.getMessage());
            assertEquals(Long.parseLong(m.group(2)), e.channel(), e.getMessage());
            assertEquals(m.group(3).equals("fatal"), e.fatal(), e.getMessage());
        }
    }

    /**
     * What a receiver does with the bytes: the header checks, then (body omitted in the vectors that stop at
     * the header) the body and stored bytes, then the handshake's own rule for a server (the first frame must
     * be a HELLO, checked by the header rules).
     */
    static void decodeAsReceiver(ByteBuffer b, FrameHeader.Rules rules) throws WireException {
        ByteBuffer probe = b.duplicate();
        FrameHeader h = FrameHeader.read(probe);
        h.check(rules);
        Frames.decode(b, rules);
    }
}
