//! [`MemoryDatabase`]: one in-memory database shared by every connection of a pool.
//!
//! `:memory:` gives each SQLite connection a database of its own: the table one pooled
//! connection creates is missing on the next. Instead, every connection opens the same named
//! in-memory database in shared-cache mode (`file:<unique name>?mode=memory&cache=shared`),
//! which the connections of one process share.
//!
//! Shared-cache locks are per table: while one connection writes a table, the others can still
//! open, and read and write other tables; a statement that needs a table another transaction
//! holds waits until it is released (sqlx's unlock-notify), and fails at once with
//! `SQLITE_LOCKED` where waiting would deadlock. (SQLite's `memdb` VFS shares a database too, but
//! a writer there blocks every reader and even a new connection, whose set-up must read the
//! schema, until it commits.)
//!
//! Such a database is freed when its last connection closes, which a pool does whenever it has
//! nothing idle (idle timeout, lifetime, a broken connection); so the first `create` also opens
//! an anchor connection, held until the last clone of the configuration is dropped.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use sqlx::ConnectOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use tokio::sync::OnceCell;

/// One in-memory database, kept alive by an anchor connection once it has been opened.
pub(crate) struct MemoryDatabase {
    /// `file:nebula-resource-sqlite-<pid>-<n>`: unique in the process, whose connections share
    /// in-memory databases by name.
    name: String,
    /// Opened by the first `create`; never used, only held.
    anchor: OnceCell<SqliteConnection>,
}

impl MemoryDatabase {
    pub(crate) fn new() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        Self {
            name: format!(
                "file:nebula-resource-sqlite-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ),
            anchor: OnceCell::new(),
        }
    }

    /// The name connections open, as an in-memory database in shared-cache mode.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// Open the anchor connection with `options`, unless it is open already. Concurrent
    /// callers wait for the one that opens it.
    pub(crate) async fn keep_alive(
        &self,
        options: &SqliteConnectOptions,
    ) -> Result<(), sqlx::Error> {
        self.anchor
            .get_or_try_init(|| options.connect())
            .await
            .map(drop)
    }
}

impl fmt::Debug for MemoryDatabase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryDatabase")
            .field("name", &self.name)
            .field("open", &self.anchor.initialized())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::MemoryDatabase;

    #[test]
    fn names_are_unique_uris() {
        let a = MemoryDatabase::new();
        let b = MemoryDatabase::new();
        assert_ne!(a.name(), b.name());
        assert!(
            a.name().starts_with("file:"),
            "a URI, so SQLite reads it as a name"
        );
        assert!(format!("{a:?}").contains("open: false"));
    }
}
