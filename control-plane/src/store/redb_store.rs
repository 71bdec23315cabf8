//! The embedded store: one redb file, every write committed durably (fsync)
//! before it is acknowledged.

use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use support_protocol::audit::{Actor, AuditAction, AuditEntry, AuditRecord, ChainBreak};
use support_protocol::handoff::HandoffKey;
use support_protocol::messages::{ApiError, TunnelStateKind};
use support_protocol::TunnelId;

use super::{
    AdminRecord, AuditDraft, HandoffOutcome, HandoffRecord, Store, StoreError, StoreResult,
    TunnelRecord, UpdateOutcome, SCHEMA_VERSION,
};

const TUNNELS: TableDefinition<u64, &[u8]> = TableDefinition::new("tunnels");
/// (expires_at, tunnel id) for every live tunnel: the sweeper's index.
const EXPIRY: TableDefinition<(u64, u64), ()> = TableDefinition::new("expiry");
/// (ended_at, tunnel id) for every ended tunnel: the retention purge's index.
const ENDED: TableDefinition<(u64, u64), ()> = TableDefinition::new("ended");
/// The same keys for tunnels that ended without ever being approved (a
/// flood's requests among them): purged after a shorter retention.
const ENDED_UNAPPROVED: TableDefinition<(u64, u64), ()> = TableDefinition::new("ended_unapproved");
/// Tunnels per state, kept with every change so metrics never scan.
const STATE_COUNTS: TableDefinition<&str, u64> = TableDefinition::new("state_counts");
const ADMINS: TableDefinition<&str, &[u8]> = TableDefinition::new("admins");
const ADMIN_KEYS: TableDefinition<&[u8], &str> = TableDefinition::new("admin_keys");
const AUDIT: TableDefinition<u64, &[u8]> = TableDefinition::new("audit");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// Admin name -> their signed hand-off key (postcard of `HandoffKey`).
const HANDOFF_KEYS: TableDefinition<&str, &[u8]> = TableDefinition::new("handoff_keys");
/// Tunnel id -> the hand-off waiting for its receiver (postcard of `HandoffRecord`).
const HANDOFFS: TableDefinition<u64, &[u8]> = TableDefinition::new("handoffs");

/// Something done to every table of the store (their types differ, so the
/// list is a call per table rather than an array).
trait EachTable {
    fn table<K: redb::Key + 'static, V: redb::Value + 'static>(
        &mut self,
        def: TableDefinition<K, V>,
    ) -> StoreResult<()>
    where
        for<'a> K::SelfType<'a>: std::borrow::Borrow<K::SelfType<'a>>;
}

/// The one list of the store's tables: opening creates each, a backup
/// copies each. A test checks that every table defined above is here.
fn for_each_table(f: &mut impl EachTable) -> StoreResult<()> {
    f.table(TUNNELS)?;
    f.table(EXPIRY)?;
    f.table(ENDED)?;
    f.table(ENDED_UNAPPROVED)?;
    f.table(STATE_COUNTS)?;
    f.table(ADMINS)?;
    f.table(ADMIN_KEYS)?;
    f.table(AUDIT)?;
    f.table(META)?;
    f.table(HANDOFF_KEYS)?;
    f.table(HANDOFFS)
}

/// Creates each table, so read transactions always find them.
struct Create<'a>(&'a redb::WriteTransaction);

impl EachTable for Create<'_> {
    fn table<K: redb::Key + 'static, V: redb::Value + 'static>(
        &mut self,
        def: TableDefinition<K, V>,
    ) -> StoreResult<()> {
        self.0.open_table(def).map_err(err)?;
        Ok(())
    }
}

/// Copies each table's rows from a snapshot into another store.
struct CopyInto<'a> {
    from: &'a redb::ReadTransaction,
    to: &'a redb::WriteTransaction,
}

impl EachTable for CopyInto<'_> {
    fn table<K: redb::Key + 'static, V: redb::Value + 'static>(
        &mut self,
        def: TableDefinition<K, V>,
    ) -> StoreResult<()>
    where
        for<'a> K::SelfType<'a>: std::borrow::Borrow<K::SelfType<'a>>,
    {
        let from = self.from.open_table(def).map_err(err)?;
        let mut to = self.to.open_table(def).map_err(err)?;
        for item in from.iter().map_err(err)? {
            let (k, v) = item.map_err(err)?;
            to.insert(k.value(), v.value()).map_err(err)?;
        }
        Ok(())
    }
}

fn err<E: std::fmt::Display>(e: E) -> StoreError {
    StoreError(e.to_string())
}

fn encode<T: serde::Serialize>(v: &T) -> StoreResult<Vec<u8>> {
    postcard::to_allocvec(v).map_err(err)
}

fn decode<'a, T: serde::Deserialize<'a>>(b: &'a [u8]) -> StoreResult<T> {
    postcard::from_bytes(b).map_err(err)
}

/// The redb-backed store.
pub struct RedbStore {
    db: Database,
}

impl RedbStore {
    /// Opens (or creates) the store file at `path` and checks its schema version.
    pub fn open(path: &Path) -> StoreResult<Self> {
        let db = Database::create(path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => StoreError(format!(
                "{} is in use by a running control plane (use its operator socket, or stop it first)",
                path.display()
            )),
            other => err(other),
        })?;
        init(&db)?;
        Ok(Self { db })
    }
}

/// Writes the schema version (or checks it) and creates every table.
fn init(db: &Database) -> StoreResult<()> {
    let tx = db.begin_write().map_err(err)?;
    {
        let mut meta = tx.open_table(META).map_err(err)?;
        let existing = meta
            .get("schema_version")
            .map_err(err)?
            .map(|v| v.value().to_vec());
        match existing {
            None => {
                meta.insert("schema_version", SCHEMA_VERSION.to_be_bytes().as_slice())
                    .map_err(err)?;
            }
            Some(v) if v == SCHEMA_VERSION.to_be_bytes() => {}
            Some(v) => {
                return Err(StoreError(format!(
                    "store schema version {v:?} is not {SCHEMA_VERSION}: this build cannot read it"
                )))
            }
        }
    }
    for_each_table(&mut Create(&tx))?;
    tx.commit().map_err(err)
}

/// A new redb store, a backup of either store: filled table by table from
/// a redb snapshot, or row by row from PostgreSQL. Written beside `path`
/// and renamed into place by [`Self::finish`], so a half-written copy
/// never has the final name.
pub struct RedbImport {
    path: std::path::PathBuf,
    partial: std::path::PathBuf,
    db: Database,
    tx: redb::WriteTransaction,
}

impl RedbImport {
    /// Starts the copy; refuses to overwrite `path`.
    pub fn create(path: &Path) -> StoreResult<Self> {
        if path.exists() {
            return Err(StoreError(format!(
                "{} exists; refusing to overwrite it",
                path.display()
            )));
        }
        let partial = path.with_extension("partial");
        let _ = std::fs::remove_file(&partial);
        let db = Database::create(&partial).map_err(err)?;
        init(&db)?;
        let tx = db.begin_write().map_err(err)?;
        Ok(Self {
            path: path.to_path_buf(),
            partial,
            db,
            tx,
        })
    }

    /// A tunnel, with when it ended (for the retention purge's index).
    pub fn tunnel(&mut self, record: &TunnelRecord, ended_at: Option<u64>) -> StoreResult<()> {
        self.tx
            .open_table(TUNNELS)
            .map_err(err)?
            .insert(record.id().0, encode(record)?.as_slice())
            .map_err(err)?;
        reindex(&self.tx, None, record, ended_at.unwrap_or(0))
    }

    /// An enrolled admin.
    pub fn admin(&mut self, admin: &AdminRecord) -> StoreResult<()> {
        self.tx
            .open_table(ADMINS)
            .map_err(err)?
            .insert(admin.name.as_str(), encode(admin)?.as_slice())
            .map_err(err)?;
        self.tx
            .open_table(ADMIN_KEYS)
            .map_err(err)?
            .insert(admin.key.as_slice(), admin.name.as_str())
            .map_err(err)?;
        Ok(())
    }

    /// A published hand-off key.
    pub fn handoff_key(&mut self, name: &str, key: &HandoffKey) -> StoreResult<()> {
        self.tx
            .open_table(HANDOFF_KEYS)
            .map_err(err)?
            .insert(name, encode(key)?.as_slice())
            .map_err(err)?;
        Ok(())
    }

    /// A waiting hand-off.
    pub fn handoff(&mut self, record: &HandoffRecord) -> StoreResult<()> {
        self.tx
            .open_table(HANDOFFS)
            .map_err(err)?
            .insert(record.tunnel_id.0, encode(record)?.as_slice())
            .map_err(err)?;
        Ok(())
    }

    /// An audit record, as it is (number, time and hash kept).
    pub fn audit(&mut self, record: &AuditRecord) -> StoreResult<()> {
        self.tx
            .open_table(AUDIT)
            .map_err(err)?
            .insert(record.entry.seq, encode(record)?.as_slice())
            .map_err(err)?;
        Ok(())
    }

    /// Commits the copy and gives it its final name.
    pub fn finish(self) -> StoreResult<()> {
        self.tx.commit().map_err(err)?;
        drop(self.db);
        std::fs::rename(&self.partial, &self.path).map_err(err)
    }
}

fn append_audit(tx: &redb::WriteTransaction, draft: AuditDraft, now: u64) -> StoreResult<()> {
    let mut audit = tx.open_table(AUDIT).map_err(err)?;
    let (seq, prev) = match audit.last().map_err(err)? {
        Some((k, v)) => {
            let r: AuditRecord = decode(v.value())?;
            (k.value() + 1, r.hash.0)
        }
        None => (1, [0u8; 32]),
    };
    let record = AuditRecord::link(
        prev,
        AuditEntry {
            seq,
            at: now,
            actor: draft.actor,
            tunnel_id: draft.tunnel_id,
            action: draft.action,
        },
    );
    audit
        .insert(seq, encode(&record)?.as_slice())
        .map_err(err)?;
    Ok(())
}

fn bump(tx: &redb::WriteTransaction, k: TunnelStateKind, up: bool) -> StoreResult<()> {
    let mut t = tx.open_table(STATE_COUNTS).map_err(err)?;
    let n = t.get(k.name()).map_err(err)?.map_or(0, |v| v.value());
    let n = if up { n + 1 } else { n.saturating_sub(1) };
    t.insert(k.name(), n).map_err(err)?;
    Ok(())
}

/// Keeps the indexes (expiry, ended, per-state counts) in step with a change.
fn reindex(
    tx: &redb::WriteTransaction,
    old: Option<&TunnelRecord>,
    new: &TunnelRecord,
    now: u64,
) -> StoreResult<()> {
    let mut expiry = tx.open_table(EXPIRY).map_err(err)?;
    if let Some(old) = old {
        expiry.remove((old.expires_at, old.id().0)).map_err(err)?;
    }
    if !new.state.kind().is_terminal() {
        expiry
            .insert((new.expires_at, new.id().0), ())
            .map_err(err)?;
    }
    drop(expiry);
    let was_ended = old.is_some_and(|o| o.state.kind().is_terminal());
    if new.state.kind().is_terminal() && !was_ended {
        tx.open_table(ENDED)
            .map_err(err)?
            .insert((now, new.id().0), ())
            .map_err(err)?;
        if new.approval.is_none() {
            tx.open_table(ENDED_UNAPPROVED)
                .map_err(err)?
                .insert((now, new.id().0), ())
                .map_err(err)?;
        }
        // A hand-off ends with its tunnel.
        tx.open_table(HANDOFFS)
            .map_err(err)?
            .remove(new.id().0)
            .map_err(err)?;
    }
    let old_kind = old.map(|o| o.state.kind());
    if old_kind != Some(new.state.kind()) {
        if let Some(k) = old_kind {
            bump(tx, k, false)?;
        }
        bump(tx, new.state.kind(), true)?;
    }
    Ok(())
}

impl Store for RedbStore {
    fn tunnel(&self, id: TunnelId) -> StoreResult<Option<TunnelRecord>> {
        let tx = self.db.begin_read().map_err(err)?;
        let t = tx.open_table(TUNNELS).map_err(err)?;
        t.get(id.0)
            .map_err(err)?
            .map(|v| decode(v.value()))
            .transpose()
    }

    fn insert_tunnel(
        &self,
        record: &TunnelRecord,
        audit: AuditDraft,
        now: u64,
    ) -> StoreResult<TunnelRecord> {
        let tx = self.db.begin_write().map_err(err)?;
        {
            let mut t = tx.open_table(TUNNELS).map_err(err)?;
            let existing = t
                .get(record.id().0)
                .map_err(err)?
                .map(|v| decode::<TunnelRecord>(v.value()));
            if let Some(existing) = existing {
                return existing;
            }
            t.insert(record.id().0, encode(record)?.as_slice())
                .map_err(err)?;
        }
        reindex(&tx, None, record, now)?;
        append_audit(&tx, audit, now)?;
        tx.commit().map_err(err)?;
        Ok(record.clone())
    }

    fn update_tunnel(
        &self,
        id: TunnelId,
        now: u64,
        change: &mut dyn FnMut(&mut TunnelRecord) -> UpdateOutcome,
    ) -> StoreResult<Option<Result<TunnelRecord, ApiError>>> {
        let tx = self.db.begin_write().map_err(err)?;
        let old: TunnelRecord = {
            let t = tx.open_table(TUNNELS).map_err(err)?;
            let Some(v) = t.get(id.0).map_err(err)? else {
                return Ok(None);
            };
            decode(v.value())?
        };
        let mut new = old.clone();
        let draft = match change(&mut new) {
            Ok(d) => d,
            Err(e) => return Ok(Some(Err(e))),
        };
        if new != old {
            let mut t = tx.open_table(TUNNELS).map_err(err)?;
            t.insert(id.0, encode(&new)?.as_slice()).map_err(err)?;
            drop(t);
            reindex(&tx, Some(&old), &new, now)?;
        }
        if let Some(d) = draft {
            append_audit(&tx, d, now)?;
        }
        tx.commit().map_err(err)?;
        Ok(Some(Ok(new)))
    }

    fn list_tunnels(
        &self,
        state: Option<TunnelStateKind>,
        after: Option<TunnelId>,
        limit: usize,
    ) -> StoreResult<Vec<TunnelRecord>> {
        let tx = self.db.begin_read().map_err(err)?;
        let t = tx.open_table(TUNNELS).map_err(err)?;
        let start = match after {
            Some(a) => match a.0.checked_add(1) {
                Some(s) => s,
                None => return Ok(Vec::new()),
            },
            None => 0,
        };
        let mut out = Vec::new();
        for item in t.range(start..).map_err(err)? {
            let (_, v) = item.map_err(err)?;
            let r: TunnelRecord = decode(v.value())?;
            if state.is_none_or(|s| r.state.kind() == s) {
                out.push(r);
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    fn due_for_expiry(&self, now: u64, limit: usize) -> StoreResult<Vec<TunnelId>> {
        let tx = self.db.begin_read().map_err(err)?;
        let t = tx.open_table(EXPIRY).map_err(err)?;
        let mut out = Vec::new();
        for item in t.range((0, 0)..=(now, u64::MAX)).map_err(err)? {
            let (k, _) = item.map_err(err)?;
            out.push(TunnelId(k.value().1));
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    fn live_tunnels(&self) -> StoreResult<u64> {
        let tx = self.db.begin_read().map_err(err)?;
        tx.open_table(EXPIRY).map_err(err)?.len().map_err(err)
    }

    fn count_by_state(&self) -> StoreResult<Vec<(TunnelStateKind, u64)>> {
        let tx = self.db.begin_read().map_err(err)?;
        let t = tx.open_table(STATE_COUNTS).map_err(err)?;
        let mut out = Vec::new();
        for k in TunnelStateKind::ALL {
            out.push((k, t.get(k.name()).map_err(err)?.map_or(0, |v| v.value())));
        }
        Ok(out)
    }

    fn purge_ended(
        &self,
        ended_before: u64,
        unapproved_ended_before: u64,
        limit: usize,
    ) -> StoreResult<usize> {
        let tx = self.db.begin_write().map_err(err)?;
        let mut n = 0;
        {
            let mut ended = tx.open_table(ENDED).map_err(err)?;
            let mut unapproved = tx.open_table(ENDED_UNAPPROVED).map_err(err)?;
            let mut tunnels = tx.open_table(TUNNELS).map_err(err)?;
            let mut due: Vec<(u64, u64)> = unapproved
                .range((0, 0)..(unapproved_ended_before, 0))
                .map_err(err)?
                .take(limit)
                .map(|i| i.map(|(k, _)| k.value()))
                .collect::<Result<_, _>>()
                .map_err(err)?;
            let room = limit - due.len();
            for item in ended
                .range((0, 0)..(ended_before, 0))
                .map_err(err)?
                .take(room)
            {
                due.push(item.map_err(err)?.0.value());
            }
            due.sort_unstable();
            due.dedup();
            for (at, id) in due {
                ended.remove((at, id)).map_err(err)?;
                unapproved.remove((at, id)).map_err(err)?;
                let old = tunnels.remove(id).map_err(err)?.map(|v| v.value().to_vec());
                if let Some(bytes) = old {
                    let r: TunnelRecord = decode(&bytes)?;
                    bump(&tx, r.state.kind(), false)?;
                    n += 1;
                }
            }
        }
        tx.commit().map_err(err)?;
        Ok(n)
    }

    fn put_admin(&self, admin: &AdminRecord, by: Actor, now: u64) -> StoreResult<()> {
        let tx = self.db.begin_write().map_err(err)?;
        {
            let mut admins = tx.open_table(ADMINS).map_err(err)?;
            let mut keys = tx.open_table(ADMIN_KEYS).map_err(err)?;
            if let Some(v) = admins
                .get(admin.name.as_str())
                .map_err(err)?
                .map(|v| v.value().to_vec())
            {
                let old: AdminRecord = decode(&v)?;
                keys.remove(old.key.as_slice()).map_err(err)?;
            }
            if let Some(other) = keys
                .get(admin.key.as_slice())
                .map_err(err)?
                .map(|v| v.value().to_string())
            {
                if other != admin.name {
                    return Err(StoreError(format!(
                        "that key is already enrolled as admin '{other}'"
                    )));
                }
            }
            admins
                .insert(admin.name.as_str(), encode(admin)?.as_slice())
                .map_err(err)?;
            keys.insert(admin.key.as_slice(), admin.name.as_str())
                .map_err(err)?;
        }
        let draft = AuditDraft {
            actor: by,
            tunnel_id: None,
            action: AuditAction::AdminAdded(super::admin_name(&admin.name)),
        };
        append_audit(&tx, draft, now)?;
        tx.commit().map_err(err)
    }

    fn remove_admin(&self, name: &str, by: Actor, now: u64) -> StoreResult<bool> {
        let tx = self.db.begin_write().map_err(err)?;
        {
            let mut admins = tx.open_table(ADMINS).map_err(err)?;
            let Some(v) = admins
                .remove(name)
                .map_err(err)?
                .map(|v| v.value().to_vec())
            else {
                return Ok(false);
            };
            let old: AdminRecord = decode(&v)?;
            tx.open_table(ADMIN_KEYS)
                .map_err(err)?
                .remove(old.key.as_slice())
                .map_err(err)?;
        }
        let draft = AuditDraft {
            actor: by,
            tunnel_id: None,
            action: AuditAction::AdminRemoved(super::admin_name(name)),
        };
        append_audit(&tx, draft, now)?;
        tx.commit().map_err(err)?;
        Ok(true)
    }

    fn admins(&self) -> StoreResult<Vec<AdminRecord>> {
        let tx = self.db.begin_read().map_err(err)?;
        let t = tx.open_table(ADMINS).map_err(err)?;
        let mut out = Vec::new();
        for item in t.iter().map_err(err)? {
            let (_, v) = item.map_err(err)?;
            out.push(decode(v.value())?);
        }
        Ok(out)
    }

    fn admin_by_key(&self, key: &[u8; 32]) -> StoreResult<Option<AdminRecord>> {
        let tx = self.db.begin_read().map_err(err)?;
        let keys = tx.open_table(ADMIN_KEYS).map_err(err)?;
        let Some(name) = keys
            .get(key.as_slice())
            .map_err(err)?
            .map(|v| v.value().to_string())
        else {
            return Ok(None);
        };
        let admins = tx.open_table(ADMINS).map_err(err)?;
        admins
            .get(name.as_str())
            .map_err(err)?
            .map(|v| decode(v.value()))
            .transpose()
    }

    fn put_handoff_key(&self, name: &str, key: &HandoffKey) -> StoreResult<()> {
        let tx = self.db.begin_write().map_err(err)?;
        tx.open_table(HANDOFF_KEYS)
            .map_err(err)?
            .insert(name, encode(key)?.as_slice())
            .map_err(err)?;
        tx.commit().map_err(err)
    }

    fn handoff_key(&self, name: &str) -> StoreResult<Option<HandoffKey>> {
        let tx = self.db.begin_read().map_err(err)?;
        let t = tx.open_table(HANDOFF_KEYS).map_err(err)?;
        t.get(name)
            .map_err(err)?
            .map(|v| decode(v.value()))
            .transpose()
    }

    fn post_handoff(
        &self,
        record: &HandoffRecord,
        audit: AuditDraft,
        now: u64,
    ) -> StoreResult<HandoffOutcome> {
        let tx = self.db.begin_write().map_err(err)?;
        {
            let tunnel: Option<TunnelRecord> = tx
                .open_table(TUNNELS)
                .map_err(err)?
                .get(record.tunnel_id.0)
                .map_err(err)?
                .map(|v| decode(v.value()))
                .transpose()?;
            let mut t = tx.open_table(HANDOFFS).map_err(err)?;
            let waiting: Option<HandoffRecord> = t
                .get(record.tunnel_id.0)
                .map_err(err)?
                .map(|v| decode(v.value()))
                .transpose()?;
            let stored = match super::handoff_to_store(record, tunnel.as_ref(), waiting.as_ref()) {
                Ok(stored) => stored,
                Err(answer) => return Ok(answer),
            };
            t.insert(record.tunnel_id.0, encode(&stored)?.as_slice())
                .map_err(err)?;
        }
        append_audit(&tx, audit, now)?;
        tx.commit().map_err(err)?;
        Ok(Ok(()))
    }

    fn handoffs_for(&self, to: &str, limit: usize) -> StoreResult<Vec<HandoffRecord>> {
        let tx = self.db.begin_read().map_err(err)?;
        let t = tx.open_table(HANDOFFS).map_err(err)?;
        let mut out = Vec::new();
        for item in t.iter().map_err(err)? {
            let (_, v) = item.map_err(err)?;
            let r: HandoffRecord = decode(v.value())?;
            if r.to == to {
                out.push(r);
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    fn handoff(&self, id: TunnelId) -> StoreResult<Option<HandoffRecord>> {
        let tx = self.db.begin_read().map_err(err)?;
        let t = tx.open_table(HANDOFFS).map_err(err)?;
        t.get(id.0)
            .map_err(err)?
            .map(|v| decode(v.value()))
            .transpose()
    }

    fn take_handoff(
        &self,
        id: TunnelId,
        to: &str,
        audit: AuditDraft,
        now: u64,
    ) -> StoreResult<bool> {
        let tx = self.db.begin_write().map_err(err)?;
        {
            let mut t = tx.open_table(HANDOFFS).map_err(err)?;
            let existing: Option<HandoffRecord> = t
                .get(id.0)
                .map_err(err)?
                .map(|v| decode(v.value()))
                .transpose()?;
            if existing.is_none_or(|e| e.to != to) {
                return Ok(false);
            }
            t.remove(id.0).map_err(err)?;
        }
        append_audit(&tx, audit, now)?;
        tx.commit().map_err(err)?;
        Ok(true)
    }

    fn audit_page(
        &self,
        tunnel: Option<TunnelId>,
        after_seq: u64,
        limit: usize,
    ) -> StoreResult<Vec<AuditRecord>> {
        let tx = self.db.begin_read().map_err(err)?;
        let t = tx.open_table(AUDIT).map_err(err)?;
        let mut out = Vec::new();
        let Some(start) = after_seq.checked_add(1) else {
            return Ok(out);
        };
        for item in t.range(start..).map_err(err)? {
            let (_, v) = item.map_err(err)?;
            let r: AuditRecord = decode(v.value())?;
            if tunnel.is_none() || r.entry.tunnel_id == tunnel {
                out.push(r);
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    fn verify_audit(&self) -> StoreResult<Result<u64, ChainBreak>> {
        let tx = self.db.begin_read().map_err(err)?;
        let t = tx.open_table(AUDIT).map_err(err)?;
        let mut walk = super::ChainWalk::default();
        for item in t.iter().map_err(err)? {
            let (k, v) = item.map_err(err)?;
            if let Err(b) = walk.next(k.value(), v.value()) {
                return Ok(Err(b));
            }
        }
        Ok(Ok(walk.count))
    }

    fn backup(&self, path: &Path) -> StoreResult<()> {
        let out = RedbImport::create(path)?;
        let src = self.db.begin_read().map_err(err)?;
        for_each_table(&mut CopyInto {
            from: &src,
            to: &out.tx,
        })?;
        out.finish()
    }
}

/// For tests: opens the store file directly and rewrites one audit record's
/// action, as an attacker with disk access would.
#[doc(hidden)]
pub fn tamper_audit_record(path: &Path, seq: u64) -> StoreResult<()> {
    let db = Database::create(path).map_err(err)?;
    let tx = db.begin_write().map_err(err)?;
    {
        let mut t = tx.open_table(AUDIT).map_err(err)?;
        let bytes = t
            .get(seq)
            .map_err(err)?
            .map(|v| v.value().to_vec())
            .ok_or(StoreError("no such record".into()))?;
        let mut r: AuditRecord = decode(&bytes)?;
        r.entry.action = AuditAction::Expired;
        t.insert(seq, encode(&r)?.as_slice()).map_err(err)?;
    }
    tx.commit().map_err(err)
}

/// For tests: opens the store file directly and flips one bit of the sealed
/// secrets of the hand-off waiting for tunnel `id`, as an attacker with disk
/// access (or a lying control plane) would.
#[doc(hidden)]
pub fn tamper_handoff(path: &Path, id: TunnelId) -> StoreResult<()> {
    let db = Database::create(path).map_err(err)?;
    let tx = db.begin_write().map_err(err)?;
    {
        let mut t = tx.open_table(HANDOFFS).map_err(err)?;
        let bytes = t
            .get(id.0)
            .map_err(err)?
            .map(|v| v.value().to_vec())
            .ok_or(StoreError("no such hand-off".into()))?;
        let mut r: HandoffRecord = decode(&bytes)?;
        let mut ct = r.package.ciphertext.to_vec();
        if let Some(b) = ct.get_mut(10) {
            *b ^= 1;
        }
        r.package.ciphertext = support_protocol::bounded::BoundedBytes::new(ct)
            .map_err(|e| StoreError(e.to_string()))?;
        t.insert(id.0, encode(&r)?.as_slice()).map_err(err)?;
    }
    tx.commit().map_err(err)
}

#[cfg(test)]
mod tests {
    use super::{err, for_each_table, EachTable, RedbStore};
    use crate::store::{Store, StoreResult};
    use redb::{ReadableDatabase, ReadableTableMetadata, TableDefinition, TableHandle};
    use std::collections::BTreeMap;

    /// The names in the one list.
    struct Names(Vec<String>);

    impl EachTable for Names {
        fn table<K: redb::Key + 'static, V: redb::Value + 'static>(
            &mut self,
            def: TableDefinition<K, V>,
        ) -> StoreResult<()> {
            self.0.push(def.name().to_string());
            Ok(())
        }
    }

    fn listed() -> Vec<String> {
        let mut names = Names(Vec::new());
        for_each_table(&mut names).expect("lists");
        names.0.sort_unstable();
        names.0
    }

    #[test]
    fn every_table_defined_in_this_file_is_in_the_one_list() {
        let source = include_str!("redb_store.rs");
        let code = source.split("#[cfg(test)]").next().unwrap_or_default();
        let mut defined: Vec<&str> = code
            .split("TableDefinition::new(\"")
            .skip(1)
            .filter_map(|rest| rest.split('"').next())
            .collect();
        defined.sort_unstable();
        assert!(defined.len() >= 10, "the scan found {defined:?}");
        assert_eq!(defined, listed());
    }

    /// Each table's name and row count.
    fn rows(db: &redb::Database) -> BTreeMap<String, u64> {
        let tx = db.begin_read().map_err(err).expect("reads");
        tx.list_tables()
            .expect("lists")
            .map(|t| {
                let n = tx.open_untyped_table(t.clone()).expect("opens").len();
                (t.name().to_string(), n.expect("counts"))
            })
            .collect()
    }

    #[test]
    fn a_backup_holds_every_table_with_every_row() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = RedbStore::open(&dir.path().join("store.redb")).expect("opens");
        super::super::sample::fill(&store, 1_800_000_000);
        let source = rows(&store.db);
        let names: Vec<&str> = source.keys().map(String::as_str).collect();
        assert_eq!(names, listed(), "the store holds exactly the listed tables");
        let empty: Vec<_> = source.iter().filter(|(_, n)| **n == 0).collect();
        assert!(empty.is_empty(), "the test left tables empty: {empty:?}");

        let out = dir.path().join("backup.redb");
        store.backup(&out).expect("backs up");
        let copy = redb::Database::create(&out).expect("the backup opens");
        assert_eq!(rows(&copy), source);
        drop(copy);
        // The copy is a store this build opens, with the same contents.
        let restored = RedbStore::open(&out).expect("opens as a store");
        assert_eq!(
            restored.admins().expect("reads"),
            store.admins().expect("reads")
        );
        assert_eq!(restored.verify_audit().expect("reads"), Ok(5));
    }
}
