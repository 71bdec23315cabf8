//! The shared store: one PostgreSQL database behind any number of
//! replicas, through tokio-postgres and a deadpool pool.
//!
//! Semantics match the redb store call for call (the control plane's whole
//! test suite runs on both): creates are idempotent, updates are
//! read-modify-write on a row locked `FOR UPDATE`, and every call commits
//! (synchronously, PostgreSQL's default) before it returns. Between
//! replicas:
//! - the audit chain stays one linear chain: every append locks the one
//!   `audit_head` row, after the rows it changes and before the per-state
//!   counts, so no two transactions wait on each other in a cycle;
//! - a change to a tunnel sends `NOTIFY support_cp_tunnels, '<id>'` in its
//!   transaction (delivered on commit), and each replica `LISTEN`s, so a
//!   long-poll held on one replica wakes for an approval posted on another;
//! - the expiry sweep is safe on every replica at once (each expiry is a
//!   locked read-modify-write that a second sweeper finds already done),
//!   and the retention purge takes its rows `FOR UPDATE SKIP LOCKED`.
//!
//! The trait is synchronous and the client is not: the store owns a small
//! runtime that drives its connections, and each call blocks its caller (a
//! thread of tokio's blocking pool) until the database answers.

use std::future::Future;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use deadpool_postgres::{GenericClient, Manager, ManagerConfig, Pool, RecyclingMethod};
use support_protocol::audit::{Actor, AuditAction, AuditEntry, AuditRecord, ChainBreak};
use support_protocol::handoff::HandoffKey;
use support_protocol::messages::{ApiError, TunnelStateKind};
use support_protocol::TunnelId;
use tokio_postgres::types::ToSql;
use tokio_postgres::{AsyncMessage, IsolationLevel, NoTls, Row};

use super::redb_store::RedbImport;
use super::{
    AdminRecord, AuditDraft, ChangeWaker, HandoffOutcome, HandoffRecord, Store, StoreError,
    StoreResult, TunnelRecord, UpdateOutcome, SCHEMA_VERSION,
};

/// The schema, one file per version, applied in order (`migrations/`).
const MIGRATIONS: &[(i32, &str)] = &[(1, include_str!("../../migrations/0001_initial.sql"))];
/// The channel tunnel changes are announced on.
const CHANNEL: &str = "support_cp_tunnels";
/// The advisory lock replicas take while migrating, so two starting at
/// once do not both create the tables.
const MIGRATION_LOCK: i64 = 0x5350_5f43_505f_4d31; // "SP_CP_M1"
/// Rows per query when a call walks a whole table (backup, audit verify).
const PAGE: i64 = 1000;
/// The LISTEN connection's `application_name`.
pub const LISTENER_NAME: &str = "support-control-plane listen";

/// How often the LISTEN connection is asked whether it still answers.
const LISTEN_PING: Duration = Duration::from_secs(30);
/// Connections per replica.
const POOL_SIZE: usize = 16;
/// How long a call waits for a free connection, or for a new one.
const POOL_WAIT: Duration = Duration::from_secs(10);

/// Whether `location` names a PostgreSQL database (a libpq URL).
pub fn is_postgres_url(location: &str) -> bool {
    location.starts_with("postgres://") || location.starts_with("postgresql://")
}

/// The PostgreSQL-backed store.
pub struct PgStore {
    runtime: Option<tokio::runtime::Runtime>,
    pool: Pool,
    config: tokio_postgres::Config,
}

fn err<E: std::fmt::Display>(e: E) -> StoreError {
    StoreError(e.to_string())
}

/// tokio-postgres's own text for a server error is only "db error"; say
/// what the server said.
fn pg(e: tokio_postgres::Error) -> StoreError {
    match e.as_db_error() {
        Some(db) => StoreError(format!("postgres: {} ({})", db.message(), db.code().code())),
        None => match std::error::Error::source(&e) {
            Some(cause) => StoreError(format!("postgres: {e}: {cause}")),
            None => StoreError(format!("postgres: {e}")),
        },
    }
}

/// A migration's error; when the user may not create the tables, it also
/// says which grant is missing (Cloud SQL gives an IAM user none).
fn migration_err(e: tokio_postgres::Error) -> StoreError {
    let denied = e.code() == Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE);
    let StoreError(message) = pg(e);
    match denied {
        true => StoreError(format!(
            "{message}: the store's database user must be allowed to create its tables, \
             once: GRANT USAGE, CREATE ON SCHEMA public TO <that user> (on Cloud SQL, run \
             what `tofu output cloud_sql_bootstrap` prints)"
        )),
        false => StoreError(message),
    }
}

fn pool_err(e: deadpool_postgres::PoolError) -> StoreError {
    match e {
        deadpool_postgres::PoolError::Backend(e) => pg(e),
        other => StoreError(format!("postgres pool: {other}")),
    }
}

/// Runs `sql` as a statement prepared once per connection: an unprepared
/// one costs a second round trip every time.
async fn exec<C: GenericClient>(
    c: &C,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> StoreResult<u64> {
    let statement = c.prepare_cached(sql).await.map_err(pg)?;
    c.execute(&statement, params).await.map_err(pg)
}

/// The rows of `sql` (prepared once per connection).
async fn rows<C: GenericClient>(
    c: &C,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> StoreResult<Vec<Row>> {
    let statement = c.prepare_cached(sql).await.map_err(pg)?;
    c.query(&statement, params).await.map_err(pg)
}

/// The row of `sql`, if any (prepared once per connection).
async fn row_opt<C: GenericClient>(
    c: &C,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> StoreResult<Option<Row>> {
    let statement = c.prepare_cached(sql).await.map_err(pg)?;
    c.query_opt(&statement, params).await.map_err(pg)
}

/// The one row of `sql` (prepared once per connection).
async fn row_one<C: GenericClient>(
    c: &C,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> StoreResult<Row> {
    let statement = c.prepare_cached(sql).await.map_err(pg)?;
    c.query_one(&statement, params).await.map_err(pg)
}

fn encode<T: serde::Serialize>(v: &T) -> StoreResult<Vec<u8>> {
    postcard::to_allocvec(v).map_err(err)
}

fn decode<'a, T: serde::Deserialize<'a>>(b: &'a [u8]) -> StoreResult<T> {
    postcard::from_bytes(b).map_err(err)
}

/// A tunnel id as its BIGINT key: the top bit flipped keeps the order.
fn key(id: u64) -> i64 {
    i64::from_ne_bytes((id ^ (1 << 63)).to_ne_bytes())
}

/// The tunnel id of a BIGINT key.
fn id_of(key: i64) -> u64 {
    u64::from_ne_bytes(key.to_ne_bytes()) ^ (1 << 63)
}

/// A time or count as BIGINT (saturating: no real value comes near).
fn big(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn unsigned(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// The columns beside a tunnel's record.
struct TunnelColumns {
    state: &'static str,
    expires_at: Option<i64>,
    approved: bool,
}

fn columns(r: &TunnelRecord) -> TunnelColumns {
    let kind = r.state.kind();
    TunnelColumns {
        state: kind.name(),
        expires_at: (!kind.is_terminal()).then(|| big(r.expires_at)),
        approved: r.approval.is_some(),
    }
}

type Tx<'a> = deadpool_postgres::Transaction<'a>;

/// Locks the audit chain's head; every writer that appends or changes the
/// per-state counts takes it (after its row locks), so appends from
/// several replicas form one chain.
async fn lock_head(tx: &Tx<'_>) -> StoreResult<(u64, [u8; 32])> {
    let row = row_one(tx, "SELECT seq, hash FROM audit_head FOR UPDATE", &[]).await?;
    let hash: Vec<u8> = row.get(1);
    let hash = hash
        .try_into()
        .map_err(|_| StoreError("audit_head.hash is not 32 bytes".into()))?;
    Ok((unsigned(row.get(0)), hash))
}

/// Appends one audit record; the head must be locked (`head` is its value).
async fn append_audit(
    tx: &Tx<'_>,
    head: (u64, [u8; 32]),
    draft: AuditDraft,
    now: u64,
) -> StoreResult<()> {
    let seq = head.0 + 1;
    let record = AuditRecord::link(
        head.1,
        AuditEntry {
            seq,
            at: now,
            actor: draft.actor,
            tunnel_id: draft.tunnel_id,
            action: draft.action,
        },
    );
    exec(
        tx,
        "INSERT INTO audit (seq, tunnel_id, record) VALUES ($1, $2, $3)",
        &[
            &big(seq),
            &draft.tunnel_id.map(|t| key(t.0)),
            &encode(&record)?,
        ],
    )
    .await?;
    exec(
        tx,
        "UPDATE audit_head SET seq = $1, hash = $2",
        &[&big(seq), &record.hash.0.as_slice()],
    )
    .await?;
    Ok(())
}

/// Moves one tunnel between states in the counts; the head must be locked.
async fn count(tx: &Tx<'_>, kind: TunnelStateKind, delta: i64) -> StoreResult<()> {
    exec(
        tx,
        "INSERT INTO state_counts (state, n) VALUES ($1, GREATEST($2::BIGINT, 0)) \
         ON CONFLICT (state) DO UPDATE SET n = GREATEST(state_counts.n + $2, 0)",
        &[&kind.name(), &delta],
    )
    .await?;
    Ok(())
}

impl PgStore {
    /// Connects to the database at `url` (a libpq URL, e.g.
    /// `postgres://cp@db.internal/support?sslmode=disable`), and creates or
    /// migrates its tables. Called outside any async runtime.
    pub fn open(url: &str) -> StoreResult<Self> {
        let mut config = tokio_postgres::Config::from_str(url)
            .map_err(|e| StoreError(format!("{}: {e}", redact(url))))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(5));
        }
        // A connection a NAT or a failover dropped without a reset is
        // noticed in about a minute, not the kernel's two hours.
        config
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(30))
            .keepalives_interval(Duration::from_secs(10))
            .keepalives_retries(3);
        config.application_name("support-control-plane");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("postgres-store")
            .enable_all()
            .build()
            .map_err(err)?;
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(POOL_WAIT))
            .create_timeout(Some(POOL_WAIT))
            .build()
            .map_err(err)?;
        let store = Self {
            runtime: Some(runtime),
            pool,
            config,
        };
        store
            .run(store.migrate())
            .map_err(|e| StoreError(format!("{}: {}", redact(url), e.0)))?;
        Ok(store)
    }

    /// Runs `f` on the store's runtime and waits for it.
    fn run<F: Future>(&self, f: F) -> F::Output {
        let Some(rt) = self.runtime.as_ref() else {
            unreachable!("the runtime lives until drop");
        };
        if tokio::runtime::Handle::try_current().is_ok() {
            // On a runtime's own thread (not the blocking pool): tell it
            // this thread blocks for a while.
            tokio::task::block_in_place(|| rt.block_on(f))
        } else {
            rt.block_on(f)
        }
    }

    async fn client(&self) -> StoreResult<deadpool_postgres::Object> {
        self.pool.get().await.map_err(pool_err)
    }

    async fn migrate(&self) -> StoreResult<()> {
        let mut client = self.client().await?;
        exec(&client, "SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK]).await?;
        let result = async {
            client
                .batch_execute(
                    "CREATE TABLE IF NOT EXISTS schema_migrations (\
                     version INTEGER PRIMARY KEY, \
                     applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
                )
                .await
                .map_err(migration_err)?;
            let newest: Option<i32> =
                row_one(&client, "SELECT max(version) FROM schema_migrations", &[])
                    .await?
                    .get(0);
            let newest = newest.unwrap_or(0);
            let known = i32::try_from(SCHEMA_VERSION).unwrap_or(i32::MAX);
            if newest > known {
                return Err(StoreError(format!(
                    "store schema version {newest} is newer than {known}: this build cannot read it"
                )));
            }
            for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > newest) {
                let tx = client.transaction().await.map_err(pg)?;
                tx.batch_execute(sql).await.map_err(migration_err)?;
                exec(
                    &tx,
                    "INSERT INTO schema_migrations (version) VALUES ($1)",
                    &[version],
                )
                .await?;
                tx.commit().await.map_err(pg)?;
                tracing::info!(version, "applied a store migration");
            }
            Ok(())
        }
        .await;
        exec(&client, "SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK]).await?;
        result
    }

    async fn tunnel_in(tx: &Tx<'_>, id: TunnelId, lock: &str) -> StoreResult<Option<TunnelRecord>> {
        let sql = format!("SELECT record FROM tunnels WHERE id = $1 {lock}");
        row_opt(tx, &sql, &[&key(id.0)])
            .await?
            .map(|row| decode(row.get::<_, &[u8]>(0)))
            .transpose()
    }

    /// For tests: rewrites one audit record's action, as an attacker with
    /// the database's credentials would.
    #[doc(hidden)]
    pub fn tamper_audit_record(&self, seq: u64) -> StoreResult<()> {
        self.run(async {
            let client = self.client().await?;
            let row = row_opt(
                &client,
                "SELECT record FROM audit WHERE seq = $1",
                &[&big(seq)],
            )
            .await?
            .ok_or(StoreError("no such record".into()))?;
            let mut r: AuditRecord = decode(row.get::<_, &[u8]>(0))?;
            r.entry.action = AuditAction::Expired;
            exec(
                &client,
                "UPDATE audit SET record = $2 WHERE seq = $1",
                &[&big(seq), &encode(&r)?],
            )
            .await?;
            Ok(())
        })
    }
}

/// `url` without its password (in the user part or a `password=`
/// parameter), for messages.
pub fn redact(url: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let base = match (base.find("://"), base.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => match base[scheme + 3..at].split_once(':') {
            Some((user, _)) => format!("{}{user}:***{}", &base[..scheme + 3], &base[at..]),
            None => base.to_string(),
        },
        _ => base.to_string(),
    };
    let Some(query) = query else {
        return base;
    };
    let query: Vec<String> = query
        .split('&')
        .map(|kv| match kv.split_once('=') {
            Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
            _ => kv.to_string(),
        })
        .collect();
    format!("{base}?{}", query.join("&"))
}

impl Drop for PgStore {
    fn drop(&mut self) {
        // Dropped on a runtime's thread at shutdown: a blocking shutdown
        // would panic there, and nothing is left to wait for.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// Keeps one connection LISTENing and calls `wake` for each change; after
/// any break it reconnects and wakes every waiter (notifications sent
/// meanwhile were lost).
async fn listen(config: tokio_postgres::Config, wake: ChangeWaker) {
    let mut backoff = Duration::from_millis(100);
    loop {
        match config.connect(NoTls).await {
            Ok((client, mut connection)) => {
                let on_message = wake.clone();
                let driver = tokio::spawn(async move {
                    while let Some(message) =
                        std::future::poll_fn(|cx| connection.poll_message(cx)).await
                    {
                        match message {
                            Ok(AsyncMessage::Notification(n)) => match n.payload().parse::<u64>() {
                                Ok(id) => on_message(Some(TunnelId(id))),
                                Err(_) => on_message(None),
                            },
                            Ok(_) => {}
                            Err(e) => {
                                tracing::warn!(error = %e, "the store's LISTEN connection broke");
                                break;
                            }
                        }
                    }
                });
                match client.batch_execute(&format!("LISTEN {CHANNEL}")).await {
                    Ok(()) => {
                        backoff = Duration::from_millis(100);
                        wake(None);
                        // The connection only reads: ask it something now
                        // and then, so a silent break is noticed.
                        let mut driver = driver;
                        loop {
                            tokio::select! {
                                _ = &mut driver => break,
                                () = tokio::time::sleep(LISTEN_PING) => {
                                    let ping = client.simple_query("SELECT 1");
                                    if !matches!(tokio::time::timeout(LISTEN_PING, ping).await, Ok(Ok(_))) {
                                        tracing::warn!("the store's LISTEN connection stopped answering");
                                        driver.abort();
                                        break;
                                    }
                                }
                            }
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %pg(e), "cannot LISTEN for other replicas' changes");
                        driver.abort();
                    }
                }
                drop(client);
            }
            Err(e) => tracing::warn!(error = %pg(e), "cannot reach the store to LISTEN"),
        }
        wake(None);
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

impl Store for PgStore {
    fn watch_changes(&self, wake: ChangeWaker) {
        if let Some(rt) = &self.runtime {
            // Named apart from the pool's connections, so pg_stat_activity
            // tells which one LISTENs.
            let mut config = self.config.clone();
            config.application_name(LISTENER_NAME);
            rt.spawn(listen(config, wake));
        }
    }

    fn tunnel(&self, id: TunnelId) -> StoreResult<Option<TunnelRecord>> {
        self.run(async {
            row_opt(
                &self.client().await?,
                "SELECT record FROM tunnels WHERE id = $1",
                &[&key(id.0)],
            )
            .await?
            .map(|row| decode(row.get::<_, &[u8]>(0)))
            .transpose()
        })
    }

    fn insert_tunnel(
        &self,
        record: &TunnelRecord,
        audit: AuditDraft,
        now: u64,
    ) -> StoreResult<TunnelRecord> {
        self.run(async {
            let mut client = self.client().await?;
            let tx = client.transaction().await.map_err(pg)?;
            let c = columns(record);
            let inserted = exec(
                &tx,
                "INSERT INTO tunnels (id, state, expires_at, ended_at, approved, record) \
                     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (id) DO NOTHING",
                &[
                    &key(record.id().0),
                    &c.state,
                    &c.expires_at,
                    &c.expires_at.is_none().then(|| big(now)),
                    &c.approved,
                    &encode(record)?,
                ],
            )
            .await?;
            if inserted == 0 {
                let existing = Self::tunnel_in(&tx, record.id(), "").await?;
                return existing.ok_or(StoreError("a conflicting row vanished".into()));
            }
            let head = lock_head(&tx).await?;
            count(&tx, record.state.kind(), 1).await?;
            append_audit(&tx, head, audit, now).await?;
            tx.commit().await.map_err(pg)?;
            Ok(record.clone())
        })
    }

    fn update_tunnel(
        &self,
        id: TunnelId,
        now: u64,
        change: &mut dyn FnMut(&mut TunnelRecord) -> UpdateOutcome,
    ) -> StoreResult<Option<Result<TunnelRecord, ApiError>>> {
        self.run(async {
            let mut client = self.client().await?;
            let tx = client.transaction().await.map_err(pg)?;
            let Some(old) = Self::tunnel_in(&tx, id, "FOR UPDATE").await? else {
                return Ok(None);
            };
            let mut new = old.clone();
            let draft = match change(&mut new) {
                Ok(d) => d,
                Err(e) => return Ok(Some(Err(e))),
            };
            let (old_kind, new_kind) = (old.state.kind(), new.state.kind());
            if new != old {
                let c = columns(&new);
                let ends = new_kind.is_terminal() && !old_kind.is_terminal();
                exec(
                    &tx,
                    "UPDATE tunnels SET state = $2, expires_at = $3, approved = $4, record = $5, \
                     ended_at = CASE WHEN $6 THEN $7 ELSE ended_at END WHERE id = $1",
                    &[
                        &key(id.0),
                        &c.state,
                        &c.expires_at,
                        &c.approved,
                        &encode(&new)?,
                        &ends,
                        &big(now),
                    ],
                )
                .await?;
                if ends {
                    // A hand-off ends with its tunnel.
                    exec(
                        &tx,
                        "DELETE FROM handoffs WHERE tunnel_id = $1",
                        &[&key(id.0)],
                    )
                    .await?;
                }
                exec(
                    &tx,
                    "SELECT pg_notify($1, $2)",
                    &[&CHANNEL, &id.0.to_string()],
                )
                .await?;
            }
            if old_kind != new_kind || draft.is_some() {
                let head = lock_head(&tx).await?;
                if old_kind != new_kind {
                    count(&tx, old_kind, -1).await?;
                    count(&tx, new_kind, 1).await?;
                }
                if let Some(d) = draft {
                    append_audit(&tx, head, d, now).await?;
                }
            }
            tx.commit().await.map_err(pg)?;
            Ok(Some(Ok(new)))
        })
    }

    fn list_tunnels(
        &self,
        state: Option<TunnelStateKind>,
        after: Option<TunnelId>,
        limit: usize,
    ) -> StoreResult<Vec<TunnelRecord>> {
        let after = match after {
            Some(a) if a.0 == u64::MAX => return Ok(Vec::new()),
            Some(a) => Some(key(a.0)),
            None => None,
        };
        self.run(async {
            let rows = rows(
                &self.client().await?,
                "SELECT record FROM tunnels \
                     WHERE ($1::BIGINT IS NULL OR id > $1) AND ($2::TEXT IS NULL OR state = $2) \
                     ORDER BY id LIMIT $3",
                &[
                    &after,
                    &state.map(TunnelStateKind::name),
                    &big(limit as u64),
                ],
            )
            .await?;
            rows.iter().map(|r| decode(r.get::<_, &[u8]>(0))).collect()
        })
    }

    fn due_for_expiry(&self, now: u64, limit: usize) -> StoreResult<Vec<TunnelId>> {
        self.run(async {
            let rows = rows(
                &self.client().await?,
                "SELECT id FROM tunnels WHERE expires_at <= $1 \
                     ORDER BY expires_at, id LIMIT $2",
                &[&big(now), &big(limit as u64)],
            )
            .await?;
            Ok(rows.iter().map(|r| TunnelId(id_of(r.get(0)))).collect())
        })
    }

    fn live_tunnels(&self) -> StoreResult<u64> {
        Ok(self
            .count_by_state()?
            .into_iter()
            .filter(|(k, _)| !k.is_terminal())
            .map(|(_, n)| n)
            .sum())
    }

    fn count_by_state(&self) -> StoreResult<Vec<(TunnelStateKind, u64)>> {
        let rows = self.run(async {
            rows(
                &self.client().await?,
                "SELECT state, n FROM state_counts",
                &[],
            )
            .await
        })?;
        Ok(TunnelStateKind::ALL
            .into_iter()
            .map(|k| {
                let n = rows
                    .iter()
                    .find(|r| r.get::<_, &str>(0) == k.name())
                    .map_or(0, |r| unsigned(r.get(1)));
                (k, n)
            })
            .collect())
    }

    fn purge_ended(
        &self,
        ended_before: u64,
        unapproved_ended_before: u64,
        limit: usize,
    ) -> StoreResult<usize> {
        self.run(async {
            let mut client = self.client().await?;
            let tx = client.transaction().await.map_err(pg)?;
            // SKIP LOCKED: replicas purging at once take disjoint rows.
            let rows = rows(
                &tx,
                "DELETE FROM tunnels WHERE id IN (\
                       SELECT id FROM tunnels WHERE ended_at IS NOT NULL \
                       AND (ended_at < $1 OR (NOT approved AND ended_at < $2)) \
                       ORDER BY ended_at, id LIMIT $3 FOR UPDATE SKIP LOCKED) \
                     RETURNING state",
                &[
                    &big(ended_before),
                    &big(unapproved_ended_before),
                    &big(limit as u64),
                ],
            )
            .await?;
            if !rows.is_empty() {
                lock_head(&tx).await?;
                for k in TunnelStateKind::ALL {
                    let n = rows
                        .iter()
                        .filter(|r| r.get::<_, &str>(0) == k.name())
                        .count();
                    if n > 0 {
                        count(&tx, k, -big(n as u64)).await?;
                    }
                }
            }
            tx.commit().await.map_err(pg)?;
            Ok(rows.len())
        })
    }

    fn put_admin(&self, admin: &AdminRecord, by: Actor, now: u64) -> StoreResult<()> {
        self.run(async {
            let mut client = self.client().await?;
            let tx = client.transaction().await.map_err(pg)?;
            let other = row_opt(
                &tx,
                "SELECT name FROM admins WHERE key = $1 AND name <> $2",
                &[&admin.key.as_slice(), &admin.name],
            )
            .await?;
            if let Some(other) = other {
                let other: String = other.get(0);
                return Err(StoreError(format!(
                    "that key is already enrolled as admin '{other}'"
                )));
            }
            exec(
                &tx,
                "INSERT INTO admins (name, key, record) VALUES ($1, $2, $3) \
                 ON CONFLICT (name) DO UPDATE SET key = $2, record = $3",
                &[&admin.name, &admin.key.as_slice(), &encode(admin)?],
            )
            .await?;
            let head = lock_head(&tx).await?;
            let draft = AuditDraft {
                actor: by,
                tunnel_id: None,
                action: AuditAction::AdminAdded(super::admin_name(&admin.name)),
            };
            append_audit(&tx, head, draft, now).await?;
            tx.commit().await.map_err(pg)
        })
    }

    fn remove_admin(&self, name: &str, by: Actor, now: u64) -> StoreResult<bool> {
        self.run(async {
            let mut client = self.client().await?;
            let tx = client.transaction().await.map_err(pg)?;
            let removed = exec(&tx, "DELETE FROM admins WHERE name = $1", &[&name]).await?;
            if removed == 0 {
                return Ok(false);
            }
            let head = lock_head(&tx).await?;
            let draft = AuditDraft {
                actor: by,
                tunnel_id: None,
                action: AuditAction::AdminRemoved(super::admin_name(name)),
            };
            append_audit(&tx, head, draft, now).await?;
            tx.commit().await.map_err(pg)?;
            Ok(true)
        })
    }

    fn admins(&self) -> StoreResult<Vec<AdminRecord>> {
        self.run(async {
            let rows = rows(
                &self.client().await?,
                "SELECT record FROM admins ORDER BY name",
                &[],
            )
            .await?;
            rows.iter().map(|r| decode(r.get::<_, &[u8]>(0))).collect()
        })
    }

    fn admin_by_key(&self, key: &[u8; 32]) -> StoreResult<Option<AdminRecord>> {
        self.run(async {
            row_opt(
                &self.client().await?,
                "SELECT record FROM admins WHERE key = $1",
                &[&key.as_slice()],
            )
            .await?
            .map(|r| decode(r.get::<_, &[u8]>(0)))
            .transpose()
        })
    }

    fn put_handoff_key(&self, name: &str, key: &HandoffKey) -> StoreResult<()> {
        self.run(async {
            exec(
                &self.client().await?,
                "INSERT INTO handoff_keys (name, key) VALUES ($1, $2) \
                     ON CONFLICT (name) DO UPDATE SET key = $2",
                &[&name, &encode(key)?],
            )
            .await?;
            Ok(())
        })
    }

    fn handoff_key(&self, name: &str) -> StoreResult<Option<HandoffKey>> {
        self.run(async {
            row_opt(
                &self.client().await?,
                "SELECT key FROM handoff_keys WHERE name = $1",
                &[&name],
            )
            .await?
            .map(|r| decode(r.get::<_, &[u8]>(0)))
            .transpose()
        })
    }

    fn post_handoff(
        &self,
        record: &HandoffRecord,
        audit: AuditDraft,
        now: u64,
    ) -> StoreResult<HandoffOutcome> {
        self.run(async {
            let mut client = self.client().await?;
            let tx = client.transaction().await.map_err(pg)?;
            // FOR NO KEY UPDATE: posts for one tunnel take turns (with no
            // hand-off row yet, the one below locks nothing), and the tunnel
            // cannot end (and drop its hand-off) before this commits.
            let tunnel = Self::tunnel_in(&tx, record.tunnel_id, "FOR NO KEY UPDATE").await?;
            let waiting: Option<HandoffRecord> = row_opt(
                &tx,
                "SELECT record FROM handoffs WHERE tunnel_id = $1 FOR UPDATE",
                &[&key(record.tunnel_id.0)],
            )
            .await?
            .map(|r| decode(r.get::<_, &[u8]>(0)))
            .transpose()?;
            let stored = match super::handoff_to_store(record, tunnel.as_ref(), waiting.as_ref()) {
                Ok(stored) => stored,
                Err(answer) => return Ok(answer),
            };
            exec(
                &tx,
                "INSERT INTO handoffs (tunnel_id, to_name, record) VALUES ($1, $2, $3) \
                 ON CONFLICT (tunnel_id) DO UPDATE SET to_name = $2, record = $3",
                &[&key(record.tunnel_id.0), &stored.to, &encode(&stored)?],
            )
            .await?;
            let head = lock_head(&tx).await?;
            append_audit(&tx, head, audit, now).await?;
            tx.commit().await.map_err(pg)?;
            Ok(Ok(()))
        })
    }

    fn handoffs_for(&self, to: &str, limit: usize) -> StoreResult<Vec<HandoffRecord>> {
        self.run(async {
            let rows = rows(
                &self.client().await?,
                "SELECT record FROM handoffs WHERE to_name = $1 ORDER BY tunnel_id LIMIT $2",
                &[&to, &big(limit as u64)],
            )
            .await?;
            rows.iter().map(|r| decode(r.get::<_, &[u8]>(0))).collect()
        })
    }

    fn handoff(&self, id: TunnelId) -> StoreResult<Option<HandoffRecord>> {
        self.run(async {
            row_opt(
                &self.client().await?,
                "SELECT record FROM handoffs WHERE tunnel_id = $1",
                &[&key(id.0)],
            )
            .await?
            .map(|r| decode(r.get::<_, &[u8]>(0)))
            .transpose()
        })
    }

    fn take_handoff(
        &self,
        id: TunnelId,
        to: &str,
        audit: AuditDraft,
        now: u64,
    ) -> StoreResult<bool> {
        self.run(async {
            let mut client = self.client().await?;
            let tx = client.transaction().await.map_err(pg)?;
            let taken = exec(
                &tx,
                "DELETE FROM handoffs WHERE tunnel_id = $1 AND to_name = $2",
                &[&key(id.0), &to],
            )
            .await?;
            if taken == 0 {
                return Ok(false);
            }
            let head = lock_head(&tx).await?;
            append_audit(&tx, head, audit, now).await?;
            tx.commit().await.map_err(pg)?;
            Ok(true)
        })
    }

    fn audit_page(
        &self,
        tunnel: Option<TunnelId>,
        after_seq: u64,
        limit: usize,
    ) -> StoreResult<Vec<AuditRecord>> {
        self.run(async {
            let rows = rows(
                &self.client().await?,
                "SELECT record FROM audit \
                     WHERE seq > $1 AND ($2::BIGINT IS NULL OR tunnel_id = $2) \
                     ORDER BY seq LIMIT $3",
                &[
                    &big(after_seq),
                    &tunnel.map(|t| key(t.0)),
                    &big(limit as u64),
                ],
            )
            .await?;
            rows.iter().map(|r| decode(r.get::<_, &[u8]>(0))).collect()
        })
    }

    fn verify_audit(&self) -> StoreResult<Result<u64, ChainBreak>> {
        self.run(async {
            let mut client = self.client().await?;
            let tx = snapshot(&mut client).await?;
            let mut walk = super::ChainWalk::default();
            loop {
                let rows = rows(
                    &tx,
                    "SELECT seq, record FROM audit WHERE seq > $1 ORDER BY seq LIMIT $2",
                    &[&big(walk.count), &PAGE],
                )
                .await?;
                if rows.is_empty() {
                    return Ok(Ok(walk.count));
                }
                for row in rows {
                    if let Err(b) = walk.next(unsigned(row.get(0)), row.get::<_, &[u8]>(1)) {
                        return Ok(Err(b));
                    }
                }
            }
        })
    }

    /// Writes a redb store file: one consistent snapshot of the database
    /// (a repeatable-read transaction), in the embedded store's format, so
    /// the same tools read, verify and serve from either store's backups.
    fn backup(&self, path: &Path) -> StoreResult<()> {
        let mut out = RedbImport::create(path)?;
        self.run(async {
            let mut client = self.client().await?;
            let tx = snapshot(&mut client).await?;
            // None before the first page: id 0 is key i64::MIN itself.
            let mut after: Option<i64> = None;
            loop {
                let rows = rows(
                    &tx,
                    "SELECT id, ended_at, record FROM tunnels \
                     WHERE ($1::BIGINT IS NULL OR id > $1) ORDER BY id LIMIT $2",
                    &[&after, &PAGE],
                )
                .await?;
                let Some(last) = rows.last() else { break };
                after = Some(last.get(0));
                for row in &rows {
                    let ended: Option<i64> = row.get(1);
                    let record: TunnelRecord = decode(row.get::<_, &[u8]>(2))?;
                    out.tunnel(&record, ended.map(unsigned))?;
                }
            }
            for row in rows(&tx, "SELECT record FROM admins", &[]).await? {
                out.admin(&decode(row.get::<_, &[u8]>(0))?)?;
            }
            for row in rows(&tx, "SELECT name, key FROM handoff_keys", &[]).await? {
                out.handoff_key(row.get(0), &decode(row.get::<_, &[u8]>(1))?)?;
            }
            for row in rows(&tx, "SELECT record FROM handoffs", &[]).await? {
                out.handoff(&decode(row.get::<_, &[u8]>(0))?)?;
            }
            let mut seq = 0i64;
            loop {
                let rows = rows(
                    &tx,
                    "SELECT seq, record FROM audit WHERE seq > $1 ORDER BY seq LIMIT $2",
                    &[&seq, &PAGE],
                )
                .await?;
                let Some(last) = rows.last() else { break };
                seq = last.get(0);
                for row in &rows {
                    out.audit(&decode(row.get::<_, &[u8]>(1))?)?;
                }
            }
            tx.commit().await.map_err(pg)
        })?;
        out.finish()
    }
}

/// A read-only transaction that sees one point in time throughout.
async fn snapshot(client: &mut deadpool_postgres::Object) -> StoreResult<Tx<'_>> {
    client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(pg)
}

#[cfg(test)]
mod tests {
    use super::{id_of, key, redact};

    #[test]
    fn keys_keep_the_order_of_ids() {
        let ids = [
            0,
            1,
            1 << 62,
            (1 << 63) - 1,
            1 << 63,
            u64::MAX - 1,
            u64::MAX,
        ];
        for pair in ids.windows(2) {
            assert!(key(pair[0]) < key(pair[1]), "{pair:?}");
        }
        for id in ids {
            assert_eq!(id_of(key(id)), id);
        }
    }

    #[test]
    fn messages_never_show_the_password() {
        assert_eq!(
            redact("postgres://cp:s3cret@db.internal/support"),
            "postgres://cp:***@db.internal/support"
        );
        assert_eq!(
            redact("postgres://cp@db/support"),
            "postgres://cp@db/support"
        );
    }
}
