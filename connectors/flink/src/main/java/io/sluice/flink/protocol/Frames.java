package io.sluice.flink.protocol;

import java.nio.ByteBuffer;

/** Decoding whole frames held in memory: the header checks, the body, and the stored-bytes checks. */
public final class Frames {
    private Frames() {}

    /** A decoded frame. */
    public static final class Frame {
        public final FrameHeader header;
        public final Message message;

        Frame(FrameHeader header, Message message) {
            this.header = header;
            this.message = message;
        }
    }

    /**
     * Decodes one frame from b (which must hold at least the whole frame; b is advanced past it), as a
     * receiver with the given rules: header checks, body CRC and fields, then the stored bytes of a data
     * message (each item's header and payload CRCs; WRITE_DATA and PUSH_DATA exactly one item).
     */
    public static Frame decode(ByteBuffer b, FrameHeader.Rules rules) throws WireException {
        if (b.remaining() < Wire.HEADER_SIZE) {
            throw new WireException(ErrorCode.MALFORMED, 0, true, "a frame of " + b.remaining() + " bytes, shorter than its header");
        }
        FrameHeader h = FrameHeader.read(b);
        h.check(rules);
        if (b.remaining() < h.bodyLength) {
            throw new WireException(ErrorCode.MALFORMED, 0, true, "body of " + h.bodyLength + " bytes announced, " + b.remaining() + " present");
        }
        ByteBuffer body = b.slice();
        body.limit((int) h.bodyLength);
        b.position(b.position() + (int) h.bodyLength);
        Message m = Message.decode(h, body);
        if (h.type.isData()) {
            checkStored(h, m);
        }
        return new Frame(h, m);
    }

    /** Checks the stored bytes of a data message; a failure is CORRUPT_DATA on the frame's channel. */
    public static void checkStored(FrameHeader h, Message m) throws WireException {
        try {
            switch (h.type) {
                case WRITE_DATA:
                    checkOne(((Message.WriteData) m).stored, StoredHeader.KIND_BUFFER);
                    break;
                case PUSH_DATA:
                    checkOne(((Message.PushData) m).stored, StoredHeader.KIND_SEGMENT);
                    break;
                case READ_DATA:
                    forEachItem(((Message.ReadData) m).stored, null);
                    break;
                default:
                    break;
            }
        } catch (StoredHeader.CorruptException e) {
            throw new WireException(ErrorCode.CORRUPT_DATA, h.channel, false, h.type + ": " + e.getMessage());
        }
    }

    private static void checkOne(ByteBuffer stored, byte kind) throws StoredHeader.CorruptException {
        StoredHeader sh = StoredHeader.decode(stored, kind, 0);
        if (stored.remaining() != sh.storedSize()) {
            throw new StoredHeader.CorruptException(0, "the body holds " + stored.remaining() + " bytes, the item " + sh.storedSize()
                    + (stored.remaining() > sh.storedSize() ? ": more than one item" : ""));
        }
        ByteBuffer payload = stored.duplicate();
        payload.position(stored.position() + sh.headerSize());
        sh.checkPayload(payload, 0);
    }

    /** Visits each checked item of READ_DATA's stored bytes (buffers, or segments: told by the kind byte). */
    public interface ItemVisitor {
        void item(StoredHeader header, ByteBuffer payload);
    }

    /**
     * Splits stored bytes into whole items, checking each (kind, header CRC, fields, whole payload, payload
     * CRC); the kind of the first item decides buffers or segments for all.
     */
    public static int forEachItem(ByteBuffer stored, ItemVisitor v) throws StoredHeader.CorruptException {
        ByteBuffer s = stored.duplicate();
        int n = 0;
        byte kind = s.hasRemaining() ? s.get(s.position()) : 0;
        while (s.hasRemaining()) {
            long off = s.position() - stored.position();
            StoredHeader sh = StoredHeader.decode(s, kind == StoredHeader.KIND_SEGMENT ? StoredHeader.KIND_SEGMENT : StoredHeader.KIND_BUFFER, off);
            if (s.remaining() < sh.storedSize()) {
                throw new StoredHeader.CorruptException(off, "the frame ends " + (sh.storedSize() - s.remaining()) + " bytes before the item");
            }
            ByteBuffer payload = s.duplicate();
            payload.position(s.position() + sh.headerSize()).limit(s.position() + sh.storedSize());
            sh.checkPayload(payload, off);
            if (v != null) {
                v.item(sh, payload.slice());
            }
            s.position(s.position() + sh.storedSize());
            n++;
        }
        return n;
    }
}
