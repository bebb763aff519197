//! The PostgreSQL back end, for several `serve` processes sharing one database behind a
//! load balancer. A small pool of connections ([`POOL_SIZE`]); every statement has a
//! timeout ([`STATEMENT_TIMEOUT`]); migrations take an advisory lock so that replicas
//! starting together upgrade the schema once.
//!
//! Host rows are numbered from a sequence (`host_seq`). A sequence number is taken when
//! a transaction writes, not when it commits, so a replica reading "rows after N" could
//! miss a row that commits late with a smaller number; [`crate::fleet_cache`] therefore
//! re-reads a window of recent numbers (rows are idempotent to apply).
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use fleetgate_channel::ChannelError;
use fleetgate_status::report::{AgentReport, ReportV1};
use postgres::{Client, NoTls, Transaction};

use super::migrations::{self, Dialect, LATEST};
use super::{HostRow, Report, Retention, SWEEP_INTERVAL, Store, db_err, merged, status_json, with_manifest};

/// Connections per process.
pub const POOL_SIZE: usize = 8;
/// The longest a statement may run.
pub const STATEMENT_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest a request waits for a free connection.
pub const POOL_WAIT: Duration = Duration::from_secs(10);
/// Arbitrary key of the advisory lock taken while migrating.
const MIGRATION_LOCK: i64 = 0x666c_6565_7467_6174;

/// A PostgreSQL database.
pub struct PostgresStore {
    conninfo: String,
    retention: Retention,
    idle: Mutex<Pool>,
    freed: Condvar,
}

struct Pool {
    clients: Vec<Client>,
    open: usize,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The connection string may hold a password.
        f.debug_struct("PostgresStore").finish_non_exhaustive()
    }
}

fn connect(conninfo: &str) -> Result<Client, ChannelError> {
    let mut config: postgres::Config =
        conninfo.parse().map_err(|e| ChannelError::Config(format!("--postgres: {e}")))?;
    config.connect_timeout(Duration::from_secs(10));
    config.options(&format!("-c statement_timeout={}", STATEMENT_TIMEOUT.as_millis()));
    config.connect(NoTls).map_err(|e| ChannelError::Database(format!("cannot connect to PostgreSQL: {e}")))
}

/// A connection from the pool, returned to it on drop (unless it broke).
struct Pooled<'a> {
    store: &'a PostgresStore,
    client: Option<Client>,
}

impl std::ops::Deref for Pooled<'_> {
    type Target = Client;
    fn deref(&self) -> &Client {
        self.client.as_ref().unwrap_or_else(|| unreachable!("taken only on drop"))
    }
}

impl std::ops::DerefMut for Pooled<'_> {
    fn deref_mut(&mut self) -> &mut Client {
        self.client.as_mut().unwrap_or_else(|| unreachable!("taken only on drop"))
    }
}

impl Drop for Pooled<'_> {
    fn drop(&mut self) {
        let Some(client) = self.client.take() else { return };
        if let Ok(mut pool) = self.store.idle.lock() {
            if client.is_closed() {
                pool.open = pool.open.saturating_sub(1);
                // Pooled clients live on blocking threads, where closing is fine.
                drop(client);
            } else {
                pool.clients.push(client);
            }
        }
        self.store.freed.notify_one();
    }
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        // A client closes its connection by blocking on its own runtime, which panics on
        // a thread that drives async tasks — where the service's state may be dropped
        // last. Closing them on a plain thread of their own works from anywhere.
        let clients = match self.idle.get_mut() {
            Ok(pool) => std::mem::take(&mut pool.clients),
            Err(_) => return,
        };
        if let Ok(closer) = std::thread::Builder::new().name("pg-close".into()).spawn(move || drop(clients)) {
            let _ = closer.join();
        }
    }
}

impl PostgresStore {
    /// Connects, and creates or upgrades the schema.
    ///
    /// # Errors
    /// [`ChannelError::Config`] for a malformed connection string,
    /// [`ChannelError::Database`].
    pub fn open(conninfo: &str, retention: Retention) -> Result<Self, ChannelError> {
        let mut first = connect(conninfo)?;
        migrate(&mut first)?;
        Ok(Self {
            conninfo: conninfo.to_owned(),
            retention,
            idle: Mutex::new(Pool { clients: vec![first], open: 1 }),
            freed: Condvar::new(),
        })
    }

    fn client(&self) -> Result<Pooled<'_>, ChannelError> {
        let poisoned = || ChannelError::Database("connection pool lock poisoned".into());
        let mut pool = self.idle.lock().map_err(|_| poisoned())?;
        loop {
            if let Some(client) = pool.clients.pop() {
                return Ok(Pooled { store: self, client: Some(client) });
            }
            if pool.open < POOL_SIZE {
                pool.open += 1;
                drop(pool);
                return match connect(&self.conninfo) {
                    Ok(client) => Ok(Pooled { store: self, client: Some(client) }),
                    Err(e) => {
                        if let Ok(mut pool) = self.idle.lock() {
                            pool.open = pool.open.saturating_sub(1);
                        }
                        Err(e)
                    }
                };
            }
            let (next, timeout) = self.freed.wait_timeout(pool, POOL_WAIT).map_err(|_| poisoned())?;
            pool = next;
            if timeout.timed_out() && pool.clients.is_empty() && pool.open >= POOL_SIZE {
                return Err(ChannelError::Database(format!(
                    "no free PostgreSQL connection within {} s",
                    POOL_WAIT.as_secs()
                )));
            }
        }
    }
}

fn migrate(client: &mut Client) -> Result<(), ChannelError> {
    let mut tx = client.transaction().map_err(db_err)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).map_err(db_err)?;
    let exists = |tx: &mut Transaction<'_>, name: &str| -> Result<bool, ChannelError> {
        let row = tx.query_one("SELECT to_regclass($1) IS NOT NULL", &[&name]).map_err(db_err)?;
        Ok(row.get(0))
    };
    let versioned = exists(&mut tx, "schema_migrations")?;
    let legacy = !versioned && exists(&mut tx, "manifests")?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at BIGINT NOT NULL)",
    )
    .map_err(db_err)?;
    let now = "EXTRACT(EPOCH FROM now())::BIGINT";
    if legacy {
        tx.batch_execute(&format!("INSERT INTO schema_migrations VALUES (1, {now})")).map_err(db_err)?;
    }
    let at: i32 = tx.query_one("SELECT COALESCE(MAX(version), 0) FROM schema_migrations", &[]).map_err(db_err)?.get(0);
    let at = u32::try_from(at).unwrap_or(0);
    if at > LATEST {
        return Err(ChannelError::Database(migrations::too_new(at)));
    }
    for version in at + 1..=LATEST {
        tx.batch_execute(migrations::sql(version, Dialect::Postgres)).map_err(db_err)?;
        if version == 2 {
            backfill(&mut tx)?;
        }
        let v = i32::try_from(version).unwrap_or(i32::MAX);
        tx.execute(&format!("INSERT INTO schema_migrations VALUES ($1, {now})"), &[&v]).map_err(db_err)?;
    }
    tx.commit().map_err(db_err)
}

fn backfill(tx: &mut Transaction<'_>) -> Result<(), ChannelError> {
    let hosts = tx
        .query("SELECT host FROM manifests UNION SELECT DISTINCT host FROM reports ORDER BY 1", &[])
        .map_err(db_err)?;
    for row in hosts {
        let host: String = row.get(0);
        let manifest = tx
            .query_opt("SELECT commit_id, system, updated_at FROM manifests WHERE host = $1", &[&host])
            .map_err(db_err)?
            .map(|r| (r.get(0), r.get(1), r.get(2)));
        let report = tx
            .query_opt(
                "SELECT status, commit_id, system, message, received_at FROM reports WHERE host = $1
                 ORDER BY id DESC LIMIT 1",
                &[&host],
            )
            .map_err(db_err)?
            .map(|r| (ReportV1 { status: r.get(0), commit: r.get(1), system: r.get(2), message: r.get(3) }, r.get(4)));
        let status = migrations::backfill(&host, manifest, report);
        let updated = status.last_seen.unwrap_or(0);
        tx.execute(
            "INSERT INTO hosts VALUES ($1, nextval('host_seq'), $2, $3)",
            &[&host, &status_json(&status)?, &updated],
        )
        .map_err(db_err)?;
    }
    Ok(())
}

/// Writes a host row with the next sequence number; returns that number.
fn write_host(tx: &mut Transaction<'_>, host: &str, status: &str, now: i64) -> Result<i64, ChannelError> {
    let row = tx
        .query_one(
            "INSERT INTO hosts (host, seq, status, updated_at) VALUES ($1, nextval('host_seq'), $2, $3)
             ON CONFLICT (host) DO UPDATE SET seq = excluded.seq, status = excluded.status,
                 updated_at = excluded.updated_at
             RETURNING seq",
            &[&host, &status, &now],
        )
        .map_err(db_err)?;
    Ok(row.get(0))
}

/// The host's row, locked until the transaction ends (its writers take turns).
fn locked_status(tx: &mut Transaction<'_>, host: &str) -> Result<Option<String>, ChannelError> {
    // The row may not exist yet: an advisory lock on the host name serialises its first
    // writers too.
    tx.execute("SELECT pg_advisory_xact_lock(hashtext($1))", &[&host]).map_err(db_err)?;
    Ok(tx.query_opt("SELECT status FROM hosts WHERE host = $1", &[&host]).map_err(db_err)?.map(|r| r.get(0)))
}

impl Store for PostgresStore {
    fn put_manifest(
        &self,
        host: &str,
        document: &[u8],
        commit: &str,
        system: &str,
        created_at: i64,
        now: i64,
    ) -> Result<(), ChannelError> {
        let mut client = self.client()?;
        let mut tx = client.transaction().map_err(db_err)?;
        tx.execute(
            "INSERT INTO manifests (host, document, commit_id, system, updated_at) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (host) DO UPDATE SET document = $2, commit_id = $3, system = $4, updated_at = $5",
            &[&host, &document, &commit, &system, &now],
        )
        .map_err(db_err)?;
        let previous = locked_status(&mut tx, host)?;
        let status = with_manifest(host, previous.as_deref(), commit, system, created_at, now);
        write_host(&mut tx, host, &status_json(&status)?, now)?;
        tx.commit().map_err(db_err)
    }

    fn manifests(&self) -> Result<Vec<(String, Vec<u8>)>, ChannelError> {
        let mut client = self.client()?;
        let rows = client.query("SELECT host, document FROM manifests ORDER BY host", &[]).map_err(db_err)?;
        Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    fn manifest(&self, host: &str) -> Result<Option<Vec<u8>>, ChannelError> {
        let mut client = self.client()?;
        let row = client.query_opt("SELECT document FROM manifests WHERE host = $1", &[&host]).map_err(db_err)?;
        Ok(row.map(|r| r.get(0)))
    }

    fn add_report(
        &self,
        host: &str,
        report: &AgentReport,
        document: &str,
        received_at: i64,
    ) -> Result<HostRow, ChannelError> {
        let r = Report::of(report, received_at);
        let version = i32::try_from(r.version).unwrap_or(i32::MAX);
        let doc = (r.version >= 2).then_some(document);
        let mut client = self.client()?;
        let mut tx = client.transaction().map_err(db_err)?;
        let previous = locked_status(&mut tx, host)?;
        tx.execute(
            "INSERT INTO reports (host, received_at, status, commit_id, system, message, version, document)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            &[&host, &received_at, &r.status, &r.commit, &r.system, &r.message, &version, &doc],
        )
        .map_err(db_err)?;
        let status = merged(host, previous.as_deref(), report, received_at);
        let seq = write_host(&mut tx, host, &status_json(&status)?, received_at)?;
        let per_host = i64::from(self.retention.per_host);
        let oldest = received_at.saturating_sub(self.retention.max_age_secs);
        tx.execute(
            "DELETE FROM reports WHERE host = $1 AND id NOT IN
                 (SELECT id FROM reports WHERE host = $1 ORDER BY id DESC LIMIT $2)",
            &[&host, &per_host],
        )
        .map_err(db_err)?;
        tx.execute(
            "DELETE FROM reports WHERE host = $1 AND received_at < $2
                 AND id <> (SELECT MAX(id) FROM reports WHERE host = $1)",
            &[&host, &oldest],
        )
        .map_err(db_err)?;
        // One replica sweeps the whole table at a time, at most once an interval.
        let sweep = tx
            .query_opt(
                "INSERT INTO store_meta VALUES ('last_sweep', $1) ON CONFLICT (key) DO UPDATE SET value = $1
                     WHERE store_meta.value <= $1 - $2
                 RETURNING value",
                &[&received_at, &SWEEP_INTERVAL],
            )
            .map_err(db_err)?
            .is_some();
        if sweep {
            tx.execute(
                "DELETE FROM reports WHERE received_at < $1 AND id NOT IN (SELECT MAX(id) FROM reports GROUP BY host)",
                &[&oldest],
            )
            .map_err(db_err)?;
        }
        tx.commit().map_err(db_err)?;
        Ok(HostRow { seq, status })
    }

    fn reports(&self, host: &str, limit: u32) -> Result<Vec<Report>, ChannelError> {
        let mut client = self.client()?;
        let rows = client
            .query(
                "SELECT received_at, version, status, commit_id, system, message FROM reports
                 WHERE host = $1 ORDER BY id DESC LIMIT $2",
                &[&host, &i64::from(limit)],
            )
            .map_err(db_err)?;
        Ok(rows
            .into_iter()
            .map(|r| Report {
                received_at: r.get(0),
                version: u32::try_from(r.get::<_, i32>(1)).unwrap_or(0),
                status: r.get(2),
                commit: r.get(3),
                system: r.get(4),
                message: r.get(5),
            })
            .collect())
    }

    fn report_count(&self, host: &str) -> Result<u64, ChannelError> {
        let mut client = self.client()?;
        let n: i64 = client.query_one("SELECT COUNT(*) FROM reports WHERE host = $1", &[&host]).map_err(db_err)?.get(0);
        Ok(u64::try_from(n).unwrap_or(0))
    }

    fn hosts_since(&self, after: i64) -> Result<Vec<HostRow>, ChannelError> {
        let mut client = self.client()?;
        let rows =
            client.query("SELECT seq, status FROM hosts WHERE seq > $1 ORDER BY seq", &[&after]).map_err(db_err)?;
        rows.into_iter()
            .map(|r| {
                let text: String = r.get(1);
                Ok(HostRow { seq: r.get(0), status: serde_json::from_str(&text).map_err(db_err)? })
            })
            .collect()
    }

    fn changed_since(&self, after: i64) -> Result<Vec<(String, i64)>, ChannelError> {
        let mut client = self.client()?;
        let rows =
            client.query("SELECT host, seq FROM hosts WHERE seq > $1 ORDER BY seq", &[&after]).map_err(db_err)?;
        Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    fn host_rows(&self, hosts: &[String]) -> Result<Vec<HostRow>, ChannelError> {
        let mut client = self.client()?;
        let mut out = Vec::new();
        for chunk in hosts.chunks(super::ROWS_PER_QUERY) {
            let rows = client.query("SELECT seq, status FROM hosts WHERE host = ANY($1)", &[&chunk]).map_err(db_err)?;
            for r in rows {
                let text: String = r.get(1);
                out.push(HostRow { seq: r.get(0), status: serde_json::from_str(&text).map_err(db_err)? });
            }
        }
        Ok(out)
    }

    fn seq_commit_ordered(&self) -> bool {
        false
    }

    fn schema_version(&self) -> Result<u32, ChannelError> {
        let mut client = self.client()?;
        let v: i32 = client.query_one("SELECT MAX(version) FROM schema_migrations", &[]).map_err(db_err)?.get(0);
        Ok(u32::try_from(v).unwrap_or(0))
    }
}

/// The channel tests' private PostgreSQL cluster.
#[cfg(test)]
#[path = "../../../channel/tests/common/postgres.rs"]
mod test_cluster;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests;

    use super::test_cluster as cluster;

    const ROLE: &str = "fleetgate";
    const PASSWORD: &str = "store-test-password-0123";

    /// A cluster with an empty database `fleetgate`, and its connection string.
    fn database() -> (cluster::Postgres, String) {
        let pg = cluster::Postgres::start(ROLE, PASSWORD);
        pg.psql("postgres", &["--command", "CREATE DATABASE fleetgate"]);
        let conninfo = pg.keyword_value("fleetgate", Some(PASSWORD));
        (pg, conninfo)
    }

    #[test]
    fn postgres_reports_are_capped_per_host_and_old_ones_expire_but_each_hosts_newest_stays() {
        let (_pg, conninfo) = database();
        let db = PostgresStore::open(&conninfo, Retention { per_host: 3, max_age_secs: 100 }).unwrap();
        tests::reports_are_capped_per_host_and_old_ones_expire_but_each_hosts_newest_stays(&db);
    }

    #[test]
    fn postgres_host_rows_follow_reports_and_manifests_and_a_second_opener_changes_nothing() {
        let (_pg, conninfo) = database();
        let db = PostgresStore::open(&conninfo, Retention::default()).unwrap();
        tests::host_rows_follow_reports_and_manifests(&db);
        let again = PostgresStore::open(&conninfo, Retention::default()).unwrap();
        assert_eq!(again.hosts_since(0).unwrap().len(), 2);
        assert!(!again.seq_commit_ordered());
    }

    #[test]
    fn postgres_a_database_of_the_unversioned_schema_is_upgraded_with_its_data() {
        let (pg, conninfo) = database();
        let sys = "/nix/store/9lbzgxvs2rjybvqa15sgxw4j0qzp009i-nixos-system-web1";
        pg.psql("fleetgate", &["--command", migrations::sql(1, Dialect::Postgres)]);
        pg.psql(
            "fleetgate",
            &[
                "--command",
                &format!(
                    "INSERT INTO manifests VALUES ('web1', '\\x7b7d', '{}', '{sys}', 100);
                     INSERT INTO reports (host, received_at, status, system) VALUES ('web1', 150, 'ok', '{sys}');
                     INSERT INTO reports (host, received_at, status) VALUES ('db1', 160, 'failed');",
                    "a".repeat(40)
                ),
            ],
        );
        let db = PostgresStore::open(&conninfo, Retention::default()).unwrap();
        assert_eq!(db.schema_version().unwrap(), LATEST);
        let rows = db.hosts_since(0).unwrap();
        let web1 = rows.iter().find(|r| r.status.host == "web1").unwrap();
        assert_eq!(web1.status.current.as_deref(), Some(sys));
        assert_eq!(web1.status.desired.as_ref().unwrap().system, sys);
        assert!(rows.iter().any(|r| r.status.host == "db1"));
        assert_eq!(db.reports("web1", 10).unwrap()[0].version, 1);
        assert_eq!(db.manifest("web1").unwrap().as_deref(), Some(b"{}".as_slice()));
    }

    #[test]
    fn postgres_a_store_dropped_on_an_async_worker_closes_without_panicking() {
        // The service's state may be dropped last by a connection task; closing the pooled
        // clients there used to panic ("cannot start a runtime from within a runtime").
        let (_pg, conninfo) = database();
        let db = PostgresStore::open(&conninfo, Retention::default()).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(async move { drop(db) });
    }

    #[test]
    fn postgres_concurrent_reports_of_one_host_all_land_in_its_row() {
        let (_pg, conninfo) = database();
        let db = std::sync::Arc::new(PostgresStore::open(&conninfo, Retention::default()).unwrap());
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let db = db.clone();
                std::thread::spawn(move || {
                    for i in 0..10 {
                        db.add_report("web1", &tests::report(&format!("t{t}-{i}")), "{}", 1_000 + i).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(db.report_count("web1").unwrap(), 40);
        let rows = db.hosts_since(0).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].status.last_seen, Some(1_009));
    }
}
