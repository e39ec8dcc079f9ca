package io.sluice.flink.protocol;

/**
 * A protocol error found by a receiver (or sent by the peer in an ERROR frame): the code, the channel it
 * concerns (0: the connection) and whether the connection ends because of it.
 */
public class WireException extends Exception {
    private static final long serialVersionUID = 1L;

    private final int code;
    private final long channel;
    private final boolean fatal;
    private final boolean retryable;

    public WireException(ErrorCode code, long channel, boolean fatal, String message) {
        this(code.code(), channel, fatal, code.retryable(), message);
    }

    public WireException(int code, long channel, boolean fatal, boolean retryable, String message) {
        super(ErrorCode.name(code) + (channel == 0 ? " on connection" : " on channel " + channel) + ": " + message);
        this.code = code;
        this.channel = channel;
        this.fatal = fatal;
        this.retryable = retryable;
    }

    /** The wire value of the code. */
    public int code() {
        return code;
    }

    /** The code, or null when this build does not know it. */
    public ErrorCode errorCode() {
        return ErrorCode.of(code);
    }

    public long channel() {
        return channel;
    }

    public boolean fatal() {
        return fatal;
    }

    public boolean retryable() {
        return retryable;
    }

    static WireException malformed(MessageType t, long channel, String message) {
        // A malformed frame on channel 0 ends the connection; on a channel it ends only the channel.
        return new WireException(ErrorCode.MALFORMED, channel, channel == 0, (t == null ? "frame" : t.name()) + ": " + message);
    }
}
