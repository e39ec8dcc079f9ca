package io.sluice.flink.protocol;

/**
 * Error codes of the Sluice data-plane protocol (PROTOCOL.md, "Error codes"). Codes 1–15 concern the
 * connection, 16–31 a frame, 32–63 a partition. A receiver that meets a code it does not know uses the
 * ERROR frame's retryable flag instead of {@link #retryable()}.
 */
public enum ErrorCode {
    OK(0, false),
    PROTOCOL(1, false),
    BAD_MAGIC(2, false),
    VERSION_MISMATCH(3, false),
    AUTH_FAILED(4, false),
    BAD_HEADER_CRC(5, true),
    FRAME_TOO_LARGE(6, false),
    IDLE_TIMEOUT(7, true),
    SHUTTING_DOWN(8, true),
    UNKNOWN_TYPE(16, false),
    MALFORMED(17, false),
    BAD_BODY_CRC(18, true),
    OUT_OF_ORDER(19, false),
    CHANNEL_IN_USE(20, false),
    CREDIT_EXCEEDED(21, false),
    TOO_MANY_CHANNELS(22, true),
    CORRUPT_DATA(32, true),
    INVALID_ARGUMENT(33, false),
    PARTITION_NOT_FOUND(34, false),
    PARTITION_EXISTS(35, false),
    NOT_READY(36, true),
    SUPERSEDED(37, false),
    RELEASED(38, false),
    DATA_LOST(39, false),
    STORAGE_ERROR(40, true),
    NO_SPACE(41, true),
    OVERLOADED(42, true),
    TIMEOUT(43, true),
    INTERNAL(63, true);

    private static final ErrorCode[] BY_CODE = new ErrorCode[64];

    static {
        for (ErrorCode c : values()) {
            BY_CODE[c.code] = c;
        }
    }

    private final int code;
    private final boolean retryable;

    ErrorCode(int code, boolean retryable) {
        this.code = code;
        this.retryable = retryable;
    }

    /** The u16 on the wire. */
    public int code() {
        return code;
    }

    /** Whether the same operation may succeed when tried again (on a new channel, connection or worker). */
    public boolean retryable() {
        return retryable;
    }

    /** Connection errors (1–15) close the connection, except SHUTTING_DOWN. */
    public boolean connectionFatal() {
        return code >= 1 && code <= 15 && this != SHUTTING_DOWN;
    }

    /** The code for a wire value, or null if this build does not know it. */
    public static ErrorCode of(int code) {
        return code >= 0 && code < BY_CODE.length ? BY_CODE[code] : null;
    }

    /** The name of a wire value, known or not. */
    public static String name(int code) {
        ErrorCode c = of(code);
        return c != null ? c.name() : "CODE_" + code;
    }
}
