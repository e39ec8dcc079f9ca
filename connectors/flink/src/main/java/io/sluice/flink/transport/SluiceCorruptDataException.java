package io.sluice.flink.transport;

import java.io.IOException;

/** Stored data of a partition failed its checks at the consumer: the partition is corrupt, not the peer. */
public class SluiceCorruptDataException extends IOException {
    private static final long serialVersionUID = 1L;

    public SluiceCorruptDataException(String partition, long offset, String why) {
        super("corrupt data in Sluice partition " + partition + " at offset " + offset + " of its stream: " + why);
    }
}
