//! Durable state in the data dir: redb tables for DHT records and swarm bitfields.
//!
//! Why redb: it is pure Rust, maintained, ACID with copy-on-write B-trees and a
//! checksummed two-phase commit, so a write that `commit()` returned for survives a crash
//! or `kill -9` without a recovery step, and a torn write is never visible. The node commits
//! before it acknowledges (the driver holds a run's acknowledgments until its group commit,
//! run off the event loop, reports success; see `driver::commit`), so no acknowledged
//! write is lost. sled (the other candidate) is unmaintained in its stable line; SQLite would
//! add a C dependency for two key/value tables.
//!
//! Gossip entries are not kept: they are the overlay's soft state, held by every member
//! and re-learned by anti-entropy when a restarted node rejoins (its own entries too, from
//! the members that hold them), and a restarted node that found nobody would only serve
//! stale entries. What must outlive every other node is written to the DHT.
//!
//! Tables are plain byte maps; what goes in them is the caller's business (CBOR through the
//! overlay codec).

use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use crate::NodeError;

/// DHT records: key = 20-byte ring id of the key, value = the codec-encoded record.
pub(crate) const DHT_RECORDS: TableDefinition<'static, &[u8], &[u8]> =
    TableDefinition::new("dht_records");

/// Swarm state per content id: codec-encoded manifest and bitfield.
pub(crate) const SWARM_STATE: TableDefinition<'static, &[u8], &[u8]> =
    TableDefinition::new("swarm_state");

/// The table older versions created for gossip entries and never filled; removed at open.
const OLD_GOSSIP_ENTRIES: TableDefinition<'static, &[u8], &[u8]> =
    TableDefinition::new("gossip_entries");

/// Rows of a table: (key, value) pairs in key order.
pub(crate) type Rows = Vec<(Vec<u8>, Vec<u8>)>;

/// One change to apply in a single transaction.
#[derive(Clone, Debug)]
pub enum Change {
    /// Insert or replace `key` with `value`.
    Put {
        /// Key bytes.
        key: Vec<u8>,
        /// Value bytes.
        value: Vec<u8>,
    },
    /// Remove `key`.
    Delete {
        /// Key bytes.
        key: Vec<u8>,
    },
}

/// The node's embedded database.
pub struct Store {
    db: Database,
    /// Tests make commits fail with this (a full disk, an I/O error).
    #[cfg(test)]
    pub(crate) fail_commits: std::sync::atomic::AtomicBool,
    /// Dropped after `db` (fields drop in order), so its receiver learns that the database
    /// is closed ([`Store::watch_close`]).
    closed: Option<tokio::sync::oneshot::Sender<()>>,
}

fn db_err(e: impl Into<redb::Error>) -> NodeError {
    NodeError::Store(e.into())
}

impl Store {
    /// Opens or creates the database at `path`.
    pub fn open(path: &Path) -> Result<Store, NodeError> {
        let db = Database::create(path).map_err(db_err)?;
        // Create the tables so that readers never see "table does not exist".
        let tx = db.begin_write().map_err(db_err)?;
        for def in [DHT_RECORDS, SWARM_STATE] {
            tx.open_table(def).map_err(db_err)?;
        }
        tx.delete_table(OLD_GOSSIP_ENTRIES).map_err(db_err)?;
        tx.commit().map_err(db_err)?;
        Ok(Store {
            db,
            #[cfg(test)]
            fail_commits: Default::default(),
            closed: None,
        })
    }

    /// Resolves (with an error: nothing is ever sent) once this store has been dropped and
    /// its database closed, whoever held it last (a commit on the blocking pool may).
    pub fn watch_close(&mut self) -> tokio::sync::oneshot::Receiver<()> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.closed = Some(tx);
        rx
    }

    /// Applies `changes` to `table` in one durable transaction; returns once committed.
    pub fn apply(
        &self,
        table: TableDefinition<'static, &[u8], &[u8]>,
        changes: &[Change],
    ) -> Result<(), NodeError> {
        if changes.is_empty() {
            return Ok(());
        }
        #[cfg(test)]
        if self.fail_commits.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(NodeError::Io {
                path: "store.redb".into(),
                source: std::io::Error::other("injected commit failure"),
            });
        }
        let tx = self.db.begin_write().map_err(db_err)?;
        {
            let mut t = tx.open_table(table).map_err(db_err)?;
            for c in changes {
                match c {
                    Change::Put { key, value } => {
                        t.insert(key.as_slice(), value.as_slice()).map_err(db_err)?;
                    }
                    Change::Delete { key } => {
                        t.remove(key.as_slice()).map_err(db_err)?;
                    }
                }
            }
        }
        tx.commit().map_err(db_err)
    }

    /// Every entry of `table`, in key order.
    pub fn entries(
        &self,
        table: TableDefinition<'static, &[u8], &[u8]>,
    ) -> Result<Rows, NodeError> {
        let tx = self.db.begin_read().map_err(db_err)?;
        let t = tx.open_table(table).map_err(db_err)?;
        let mut out = Vec::new();
        for row in t.iter().map_err(db_err)? {
            let (k, v) = row.map_err(db_err)?;
            out.push((k.value().to_vec(), v.value().to_vec()));
        }
        Ok(out)
    }

    /// One entry of `table`.
    pub fn get(
        &self,
        table: TableDefinition<'static, &[u8], &[u8]>,
        key: &[u8],
    ) -> Result<Option<Vec<u8>>, NodeError> {
        let tx = self.db.begin_read().map_err(db_err)?;
        let t = tx.open_table(table).map_err(db_err)?;
        Ok(t.get(key).map_err(db_err)?.map(|v| v.value().to_vec()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        {
            let s = Store::open(&path).unwrap();
            s.apply(
                DHT_RECORDS,
                &[
                    Change::Put {
                        key: b"a".to_vec(),
                        value: b"1".to_vec(),
                    },
                    Change::Put {
                        key: b"b".to_vec(),
                        value: b"2".to_vec(),
                    },
                ],
            )
            .unwrap();
            s.apply(DHT_RECORDS, &[Change::Delete { key: b"a".to_vec() }])
                .unwrap();
        }
        let s = Store::open(&path).unwrap();
        assert_eq!(
            s.entries(DHT_RECORDS).unwrap(),
            vec![(b"b".to_vec(), b"2".to_vec())]
        );
        assert_eq!(s.get(DHT_RECORDS, b"b").unwrap(), Some(b"2".to_vec()));
        assert_eq!(s.get(SWARM_STATE, b"b").unwrap(), None);
    }
}
