package io.sluice.flink;

import java.io.BufferedReader;
import java.io.File;
import java.io.IOException;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.concurrent.TimeUnit;

/** Builds Go binaries of the repository and runs them as child processes for tests. */
final class GoProcess implements AutoCloseable {
    static final Path REPO = Paths.get(System.getProperty("sluice.repo", "../..")).toAbsolutePath().normalize();
    static final Path TARGET = REPO.resolve("connectors/flink/target");

    /** go build -o target/name ./pkg, once per test JVM. */
    static synchronized Path build(String name, String pkg) throws IOException, InterruptedException {
        Path out = TARGET.resolve(name);
        if (Boolean.getBoolean("sluice.prebuilt") && out.toFile().canExecute()) {
            return out;
        }
        Process p = new ProcessBuilder("go", "build", "-o", out.toString(), pkg).directory(REPO.toFile()).redirectErrorStream(true).start();
        String log = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
        if (!p.waitFor(10, TimeUnit.MINUTES) || p.exitValue() != 0) {
            throw new IOException("go build " + pkg + " failed:\n" + log);
        }
        return out;
    }

    final Process process;
    final String name;
    final List<String> lines = new ArrayList<>();

    GoProcess(String name, Path dir, String... cmd) throws IOException {
        this.name = name;
        ProcessBuilder pb = new ProcessBuilder(Arrays.asList(cmd)).redirectErrorStream(true);
        if (dir != null) {
            pb.directory(dir.toFile());
        }
        File log = TARGET.resolve("it-logs").resolve(name + ".log").toFile();
        log.getParentFile().mkdirs();
        this.process = pb.start();
        Thread t = new Thread(() -> {
            try (BufferedReader r = new BufferedReader(new InputStreamReader(process.getInputStream(), StandardCharsets.UTF_8));
                    java.io.PrintWriter w = new java.io.PrintWriter(new java.io.FileWriter(log, true))) {
                String line;
                while ((line = r.readLine()) != null) {
                    synchronized (lines) {
                        lines.add(line);
                        lines.notifyAll();
                    }
                    w.println(line);
                    w.flush();
                }
            } catch (IOException ignored) {
                // The process ended.
            }
        }, "log-" + name);
        t.setDaemon(true);
        t.start();
    }

    /** Waits for an output line starting with prefix and returns the rest. */
    String await(String prefix, long timeoutMillis) throws InterruptedException, IOException {
        long deadline = System.currentTimeMillis() + timeoutMillis;
        synchronized (lines) {
            while (true) {
                for (String l : lines) {
                    int i = l.indexOf(prefix);
                    if (i >= 0) {
                        return l.substring(i + prefix.length()).trim();
                    }
                }
                long left = deadline - System.currentTimeMillis();
                if (left <= 0 || !process.isAlive() && lines.isEmpty()) {
                    throw new IOException(name + ": no line with \"" + prefix + "\" within " + timeoutMillis + " ms; output:\n" + String.join("\n", lines));
                }
                lines.wait(Math.min(left, 200));
                if (!process.isAlive()) {
                    for (String l : lines) {
                        if (l.contains(prefix)) {
                            return l.substring(l.indexOf(prefix) + prefix.length()).trim();
                        }
                    }
                    throw new IOException(name + " exited " + process.exitValue() + "; output:\n" + String.join("\n", lines));
                }
            }
        }
    }

    /** SIGKILL. */
    void kill() throws InterruptedException {
        process.destroyForcibly();
        process.waitFor(10, TimeUnit.SECONDS);
    }

    @Override
    public void close() throws InterruptedException {
        if (process.isAlive()) {
            process.destroy();
            if (!process.waitFor(10, TimeUnit.SECONDS)) {
                process.destroyForcibly();
                process.waitFor(10, TimeUnit.SECONDS);
            }
        }
    }
}
