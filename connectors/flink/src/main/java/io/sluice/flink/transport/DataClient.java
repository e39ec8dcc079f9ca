package io.sluice.flink.transport;

import io.netty.bootstrap.Bootstrap;
import io.netty.buffer.PooledByteBufAllocator;
import io.netty.channel.ChannelFuture;
import io.netty.channel.ChannelInitializer;
import io.netty.channel.ChannelOption;
import io.netty.channel.EventLoopGroup;
import io.netty.channel.MultiThreadIoEventLoopGroup;
import io.netty.channel.nio.NioIoHandler;
import io.netty.channel.socket.SocketChannel;
import io.netty.channel.socket.nio.NioSocketChannel;
import io.sluice.flink.protocol.Wire;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.concurrent.atomic.AtomicInteger;

/**
 * The data-plane client of one process (a TaskManager): one connection per worker address, shared by every
 * writer and reader of the process, opened on first use and replaced when it fails.
 */
public final class DataClient implements AutoCloseable {
    final String clientId;
    final byte[] authToken;
    final long frameLimit = Wire.DEFAULT_FRAME_LIMIT;
    final Duration connectTimeout;
    private final EventLoopGroup group;
    private final Bootstrap bootstrap;
    private final Map<String, Connection> connections = new HashMap<>();
    private boolean closed;

    public DataClient(String clientId, String authToken, Duration connectTimeout, int threads) {
        this.clientId = clientId;
        this.authToken = authToken.getBytes(StandardCharsets.UTF_8);
        this.connectTimeout = connectTimeout;
        AtomicInteger n = new AtomicInteger();
        this.group = new MultiThreadIoEventLoopGroup(threads, r -> {
            Thread t = new Thread(r, "sluice-data-" + n.incrementAndGet());
            t.setDaemon(true);
            return t;
        }, NioIoHandler.newFactory());
        this.bootstrap = new Bootstrap().group(group).channel(NioSocketChannel.class)
                .option(ChannelOption.TCP_NODELAY, true)
                .option(ChannelOption.SO_KEEPALIVE, true)
                .option(ChannelOption.ALLOCATOR, PooledByteBufAllocator.DEFAULT)
                .option(ChannelOption.CONNECT_TIMEOUT_MILLIS, (int) Math.min(Integer.MAX_VALUE, connectTimeout.toMillis()));
    }

    /** The connection to a worker (host:port), connecting and handshaking if there is none. */
    public Connection connect(String address) throws IOException {
        Connection c;
        boolean fresh = false;
        synchronized (this) {
            if (closed) {
                throw new IOException("the Sluice data client is closed");
            }
            c = connections.get(address);
            if (c == null || c.ready().isCompletedExceptionally() || c.ready().isDone() && !c.isUsable()) {
                c = new Connection(address, this);
                connections.put(address, c);
                fresh = true;
            }
        }
        if (fresh) {
            int colon = address.lastIndexOf(':');
            if (colon < 0) {
                throw new IOException("worker address " + address + " is not host:port");
            }
            String host = address.substring(0, colon);
            int port = Integer.parseInt(address.substring(colon + 1));
            Connection conn = c;
            ChannelFuture f = bootstrap.clone().handler(new ChannelInitializer<SocketChannel>() {
                @Override
                protected void initChannel(SocketChannel ch) {
                    ch.pipeline().addLast(conn);
                }
            }).connect(host, port);
            f.addListener(x -> {
                if (!x.isSuccess()) {
                    conn.fail(new IOException("cannot connect to Sluice worker " + address + ": " + x.cause(), x.cause()), false);
                }
            });
        }
        try {
            return c.ready().get(connectTimeout.toMillis(), TimeUnit.MILLISECONDS);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new IOException("interrupted while connecting to " + address, e);
        } catch (ExecutionException e) {
            Throwable cause = e.getCause();
            throw cause instanceof IOException ? (IOException) cause : new IOException("connecting to Sluice worker " + address + " failed: " + cause, cause);
        } catch (TimeoutException e) {
            c.fail(new IOException("Sluice worker " + address + " did not complete the handshake within " + connectTimeout), false);
            throw new IOException("Sluice worker " + address + " did not complete the handshake within " + connectTimeout, e);
        }
    }

    /** Forgets a connection that failed or that its worker is closing. */
    synchronized void retire(Connection c) {
        connections.remove(c.address, c);
    }

    @Override
    public void close() {
        List<Connection> cs;
        synchronized (this) {
            closed = true;
            cs = new ArrayList<>(connections.values());
            connections.clear();
        }
        for (Connection c : cs) {
            c.close();
        }
        group.shutdownGracefully(0, 2, TimeUnit.SECONDS);
    }
}
