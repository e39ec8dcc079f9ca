package io.sluice.flink.transport;

import io.netty.buffer.ByteBuf;
import io.sluice.flink.protocol.Message;
import io.sluice.flink.protocol.WireException;

/**
 * What a connection delivers to one channel (a writer or a reader), always on the connection's event-loop
 * thread, in the order the frames arrived.
 */
interface ChannelListener {
    /** A control message for the channel. */
    void onMessage(Message m);

    /** READ_DATA fields; its stored bytes follow in {@link #onStoredBytes} calls, then {@link #onReadDataEnd}. */
    default void onReadData(long backlog, long next, long storedBytes) throws WireException {
        throw new WireException(io.sluice.flink.protocol.ErrorCode.OUT_OF_ORDER, 0, true, "READ_DATA on a channel that does not read");
    }

    /** Some stored bytes of the current READ_DATA (valid only during the call). */
    default void onStoredBytes(ByteBuf b) throws WireException {}

    default void onReadDataEnd() throws WireException {}

    /** The channel ended without a terminal message of its own: the connection failed or closed. */
    void onFailure(Throwable cause);
}
