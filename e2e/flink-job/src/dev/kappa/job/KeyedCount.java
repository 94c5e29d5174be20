package dev.kappa.job;

import org.apache.flink.table.api.EnvironmentSettings;
import org.apache.flink.table.api.TableEnvironment;

/**
 * The testbed's Flink job: an unbounded generated source counted per key, so
 * that it holds keyed state a savepoint carries. Arguments: the rows per
 * second (default 100), or "fail" to fail before submitting anything.
 */
public final class KeyedCount {
    private KeyedCount() {}

    public static void main(String[] args) {
        String rate = args.length > 0 ? args[0] : "100";
        if (rate.equals("fail")) {
            throw new IllegalArgumentException("asked to fail at start");
        }
        TableEnvironment tables = TableEnvironment.create(EnvironmentSettings.inStreamingMode());
        tables.executeSql("CREATE TABLE events (k INT, v BIGINT) WITH ("
                + "'connector' = 'datagen', 'rows-per-second' = '" + Integer.parseInt(rate) + "', "
                + "'fields.k.min' = '0', 'fields.k.max' = '999')");
        tables.executeSql("CREATE TABLE counts (k INT, n BIGINT, total BIGINT) WITH ('connector' = 'blackhole')");
        tables.executeSql("INSERT INTO counts SELECT k, COUNT(*), SUM(v) FROM events GROUP BY k");
    }
}
