package io.sluice.flink.transport;

import io.sluice.flink.protocol.WireException;
import java.io.IOException;

/** An IOException caused by an ERROR a worker sent, with its code. */
public class SluiceIOException extends IOException {
    private static final long serialVersionUID = 1L;
    private final transient WireException wire;

    public SluiceIOException(String message, WireException wire) {
        super(message, wire);
        this.wire = wire;
    }

    public WireException wire() {
        return wire;
    }
}
