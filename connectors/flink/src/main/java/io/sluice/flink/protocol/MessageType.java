package io.sluice.flink.protocol;

/** Message types of protocol 1.0 (PROTOCOL.md, "Messages"). */
public enum MessageType {
    HELLO(0x01, Sender.CLIENT, Scope.CONNECTION, false),
    HELLO_ACK(0x02, Sender.SERVER, Scope.CONNECTION, false),
    ERROR(0x03, Sender.BOTH, Scope.ANY, false),
    HEARTBEAT(0x04, Sender.BOTH, Scope.CONNECTION, false),
    CLOSE_CONNECTION(0x05, Sender.BOTH, Scope.CONNECTION, false),
    CREDIT_BATCH(0x06, Sender.BOTH, Scope.CONNECTION, false),
    CREDIT(0x08, Sender.BOTH, Scope.CHANNEL, false),
    CLOSE_CHANNEL(0x09, Sender.CLIENT, Scope.CHANNEL, false),
    CHANNEL_CLOSED(0x0A, Sender.SERVER, Scope.CHANNEL, false),
    WRITE_OPEN(0x10, Sender.CLIENT, Scope.CHANNEL, false),
    WRITE_OPENED(0x11, Sender.SERVER, Scope.CHANNEL, false),
    REGION_START(0x12, Sender.CLIENT, Scope.CHANNEL, false),
    WRITE_DATA(0x13, Sender.CLIENT, Scope.CHANNEL, true),
    REGION_FINISH(0x14, Sender.CLIENT, Scope.CHANNEL, false),
    WRITE_FINISH(0x15, Sender.CLIENT, Scope.CHANNEL, false),
    WRITE_COMMITTED(0x16, Sender.SERVER, Scope.CHANNEL, false),
    PUSH_OPEN(0x20, Sender.CLIENT, Scope.CHANNEL, false),
    PUSH_OPENED(0x21, Sender.SERVER, Scope.CHANNEL, false),
    PUSH_DATA(0x22, Sender.CLIENT, Scope.CHANNEL, true),
    PUSH_ACK(0x23, Sender.SERVER, Scope.CHANNEL, false),
    PUSH_COMMIT(0x24, Sender.CLIENT, Scope.CHANNEL, false),
    PUSH_COMMITTED(0x25, Sender.SERVER, Scope.CHANNEL, false),
    PUSH_ABORT(0x26, Sender.CLIENT, Scope.CHANNEL, false),
    PUSH_ABORTED(0x27, Sender.SERVER, Scope.CHANNEL, false),
    READ_OPEN(0x30, Sender.CLIENT, Scope.CHANNEL, false),
    READ_OPENED(0x31, Sender.SERVER, Scope.CHANNEL, false),
    READ_DATA(0x32, Sender.SERVER, Scope.CHANNEL, true),
    READ_END(0x33, Sender.SERVER, Scope.CHANNEL, false);

    /** Who sends a type. CREDIT is sent by both (server on write/push channels, client on read ones). */
    public enum Sender {
        CLIENT,
        SERVER,
        BOTH
    }

    /** Which channels a type may travel on. */
    public enum Scope {
        CONNECTION,
        CHANNEL,
        ANY
    }

    private static final MessageType[] BY_CODE = new MessageType[256];

    static {
        for (MessageType t : values()) {
            BY_CODE[t.code] = t;
        }
    }

    private final int code;
    private final Sender sender;
    private final Scope scope;
    private final boolean data;

    MessageType(int code, Sender sender, Scope scope, boolean data) {
        this.code = code;
        this.sender = sender;
        this.scope = scope;
        this.data = data;
    }

    public int code() {
        return code;
    }

    public Sender sender() {
        return sender;
    }

    public Scope scope() {
        return scope;
    }

    /** WRITE_DATA, PUSH_DATA and READ_DATA carry stored bytes after their fixed fields. */
    public boolean isData() {
        return data;
    }

    /** Bytes of fixed fields before the stored bytes of a data message (covered by the body CRC). */
    public int fixedFieldBytes() {
        return this == READ_DATA ? Wire.READ_DATA_FIELDS : 0;
    }

    /** The smallest body of a data message: its fixed fields plus a stored header (0 for control types). */
    public int minDataBody() {
        switch (this) {
            case WRITE_DATA:
                return Wire.BUFFER_HEADER_SIZE;
            case PUSH_DATA:
                return Wire.SEGMENT_HEADER_SIZE;
            case READ_DATA:
                return Wire.READ_DATA_FIELDS;
            default:
                return 0;
        }
    }

    /** The type of a wire value, or null if unknown in 1.0. */
    public static MessageType of(int code) {
        return code >= 0 && code < 256 ? BY_CODE[code] : null;
    }
}
