import java.math.BigDecimal;
import java.sql.Connection;
import java.sql.DatabaseMetaData;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.ResultSetMetaData;
import java.sql.SQLException;
import java.sql.SQLWarning;
import java.sql.Statement;
import java.util.Properties;

/** pgjdbc against dpsql, as DBeaver/Metabase use it. Prints one "key value" line per check. */
public class DpsqlJdbc {
    static void out(String s) { System.out.println(s); }

    public static void main(String[] args) throws Exception {
        String url = args[0];
        Properties p = new Properties();
        p.setProperty("user", args[1]);
        p.setProperty("password", args[2]);
        String slow = args[3];
        try (Connection c = DriverManager.getConnection(url, p)) {
            DatabaseMetaData md = c.getMetaData();
            out("product " + md.getDatabaseProductName() + " " + md.getDatabaseMajorVersion());
            try (ResultSet rs = md.getSchemas()) { while (rs.next()) out("schema " + rs.getString("TABLE_SCHEM")); }
            try (ResultSet rs = md.getTables(null, "public", "%", new String[] {"TABLE"})) {
                while (rs.next()) out("table " + rs.getString("TABLE_NAME"));
            }
            try (ResultSet rs = md.getColumns(null, "public", "visits", "%")) {
                while (rs.next()) out("column " + rs.getString("COLUMN_NAME") + " " + rs.getString("TYPE_NAME"));
            }
            try (ResultSet rs = md.getPrimaryKeys(null, "public", "visits")) {
                int n = 0;
                while (rs.next()) n++;
                out("pkeys " + n);
            }
            try (ResultSet rs = md.getImportedKeys(null, "public", "visits")) {
                int n = 0;
                while (rs.next()) n++;
                out("fkeys " + n);
            }
            try (PreparedStatement ps = c.prepareStatement("SELECT COUNT(*) AS n FROM visits WHERE cost > ? AND age > ?")) {
                for (int i = 0; i < 7; i++) { // server-side prepared and binary after prepareThreshold (5) uses
                    ps.setBigDecimal(1, new BigDecimal("100.25"));
                    ps.setInt(2, 30);
                    try (ResultSet rs = ps.executeQuery()) {
                        rs.next();
                        ResultSetMetaData m = rs.getMetaData();
                        out("count " + m.getColumnName(1) + " " + m.getColumnTypeName(1) + " " + (rs.getLong(1) >= 0));
                        SQLWarning w = ps.getWarnings();
                        out("warning " + (w == null ? "none" : w.getMessage().contains("dpsql: this query spent") ? "spent" : w.getMessage().contains("dpsql: replayed, no budget spent") ? "replayed" : "other"));
                    }
                }
            }
            try (PreparedStatement ps = c.prepareStatement("SELECT name, floor FROM departments WHERE department_id = ?")) {
                ps.setLong(1, 3);
                try (ResultSet rs = ps.executeQuery()) { rs.next(); out("department " + rs.getString(1) + " " + rs.getInt(2)); }
            }
            try (PreparedStatement ps = c.prepareStatement("SELECT AVG(cost) FROM visits WHERE visit_date >= ?")) {
                ps.setDate(1, java.sql.Date.valueOf("2021-01-01"));
                try (ResultSet rs = ps.executeQuery()) { rs.next(); out("avg " + (rs.getObject(1) != null)); }
            }
            c.setAutoCommit(false);
            try (Statement st = c.createStatement()) {
                st.setFetchSize(3); // a named portal read 3 rows per Execute
                try (ResultSet rs = st.executeQuery("SELECT department_id, name FROM departments ORDER BY department_id")) {
                    int n = 0;
                    while (rs.next()) n++;
                    out("fetched " + n);
                }
            }
            c.commit();
            c.setAutoCommit(true);
            try (Statement st = c.createStatement()) {
                Thread t = new Thread(() -> {
                    try { Thread.sleep(700); st.cancel(); } catch (Exception e) { out("cancel-error " + e); }
                });
                t.start();
                try {
                    st.executeQuery(slow);
                    out("cancel none");
                } catch (SQLException e) {
                    out("cancel " + e.getSQLState());
                }
                t.join();
            }
            try (Statement st = c.createStatement()) {
                st.executeQuery("SELECT * FROM visits");
                out("error none");
            } catch (SQLException e) {
                out("error " + e.getSQLState());
            }
            try (Statement st = c.createStatement(); ResultSet rs = st.executeQuery("SELECT 1")) {
                rs.next();
                out("after " + rs.getInt(1));
            }
        }
        out("done");
    }
}
