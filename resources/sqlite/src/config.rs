//! [`SqliteConfig`]: which database and how to open it, every knob with its default, validated
//! before anything is opened.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use nebula_resource::{Config, Error, redact_url};
use nebula_resource_sqlx::config::{check_timeout, decode_percent, query_parameters};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};

use crate::memory::MemoryDatabase;

/// Default [`SqliteConfig::busy_timeout`] (sqlx's and most drivers' default).
pub const DEFAULT_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest [`SqliteConfig::busy_timeout`] accepted: anything longer is a unit mistake.
pub const MAX_BUSY_TIMEOUT: Duration = Duration::from_secs(600);

/// Default [`SqliteConfig::statement_cache_capacity`] (sqlx's default).
pub const DEFAULT_STATEMENT_CACHE_CAPACITY: usize = 100;

/// Largest [`SqliteConfig::statement_cache_capacity`] accepted.
pub const MAX_STATEMENT_CACHE_CAPACITY: usize = 10_000;

/// The query parameters a `sqlite:` URL may carry (sqlx's, less `mode=memory`).
const URL_PARAMETERS: &[&str] = &["mode", "cache", "immutable", "vfs"];

/// Which database the connections open.
#[derive(Clone)]
enum Database {
    File(PathBuf),
    Url(String),
    Memory(Arc<MemoryDatabase>),
}

/// What a `sqlite:` URL says, once parsed.
struct ParsedUrl {
    path: PathBuf,
    /// `mode=ro` / `rw` / `rwc`, if given: (read only, create if missing).
    mode: Option<(bool, bool)>,
    shared_cache: Option<bool>,
    immutable: bool,
    vfs: Option<String>,
}

/// Settings of the [`Sqlite`](crate::Sqlite) resource: a database file, or an in-memory database
/// shared by every connection of the pool.
///
/// ```
/// use std::time::Duration;
/// use nebula_resource::Config;
/// use nebula_resource_sqlite::SqliteConfig;
///
/// // The embedded default: nothing on disk, one database for the whole pool.
/// let memory = SqliteConfig::in_memory();
/// assert!(memory.validate().is_ok());
///
/// // A file, created if missing, in WAL mode.
/// let file = SqliteConfig::file("/var/lib/app/app.db").busy_timeout(Duration::from_secs(2));
/// assert!(file.validate().is_ok());
/// assert_eq!(file.to_string(), "sqlite:///var/lib/app/app.db");
///
/// // Or a URL.
/// assert!(SqliteConfig::new("sqlite://data/app.db?mode=rwc").validate().is_ok());
/// assert!(SqliteConfig::new("sqlite::memory:").is_in_memory());
/// ```
///
/// Cloning a configuration keeps it on the same database: two registrations made with clones of
/// one `in_memory()` configuration share it, while two calls of `in_memory()` make two databases.
#[derive(Clone)]
pub struct SqliteConfig {
    database: Database,
    create_if_missing: Option<bool>,
    read_only: Option<bool>,
    journal_mode: Option<SqliteJournalMode>,
    synchronous: SqliteSynchronous,
    busy_timeout: Duration,
    foreign_keys: bool,
    statement_cache_capacity: usize,
}

impl SqliteConfig {
    /// A database file at `path`: created if missing, in WAL mode (readers do not block the
    /// writer), foreign keys enforced, a 5 s busy timeout.
    pub fn file(path: impl Into<PathBuf>) -> Self {
        Self::with(Database::File(path.into()))
    }

    /// A new in-memory database, shared by every connection of the pool (a table created
    /// through one connection is seen through all), alive as long as this configuration (or a
    /// clone of it) is: the pool may close all its connections without losing the data.
    /// Nothing touches the disk. Each call makes a new, empty database.
    pub fn in_memory() -> Self {
        Self::with(Database::Memory(Arc::new(MemoryDatabase::new())))
    }

    /// A database from a URL: `sqlite:path`, `sqlite://path` (relative to the working
    /// directory), `sqlite:///absolute/path`, with optional parameters `mode=ro|rw|rwc`,
    /// `cache=shared|private`, `immutable=true`, `vfs=name`; or `sqlite::memory:`, which is
    /// [`in_memory`](Self::in_memory). Without `mode`, a missing file is created.
    ///
    /// Nothing is checked until [`validate`](Config::validate).
    pub fn new(url: impl Into<String>) -> Self {
        let url = url.into();
        if matches!(url.trim(), "sqlite::memory:" | "sqlite://:memory:") {
            Self::in_memory()
        } else {
            Self::with(Database::Url(url))
        }
    }

    fn with(database: Database) -> Self {
        Self {
            database,
            create_if_missing: None,
            read_only: None,
            journal_mode: None,
            synchronous: SqliteSynchronous::Full,
            busy_timeout: DEFAULT_BUSY_TIMEOUT,
            foreign_keys: true,
            statement_cache_capacity: DEFAULT_STATEMENT_CACHE_CAPACITY,
        }
    }

    /// Create the database file if it does not exist. Overrides a URL's `mode`. Defaults to
    /// `true` (for a URL: `false` with `mode=rw` or `mode=ro`).
    #[must_use]
    pub fn create_if_missing(mut self, create: bool) -> Self {
        self.create_if_missing = Some(create);
        self
    }

    /// Open the database read-only. Overrides a URL's `mode`. Defaults to `false` (for a URL:
    /// `true` with `mode=ro`). Not for an in-memory database, which starts empty.
    #[must_use]
    pub fn read_only(mut self, read_only: bool) -> Self {
        self.read_only = Some(read_only);
        self
    }

    /// The journal mode each connection sets. Defaults to [`SqliteJournalMode::Wal`] for a file
    /// opened read-write (WAL is then a property of the file), to the file's own for a file
    /// opened read-only, and to `MEMORY` for an in-memory database, which accepts no other.
    #[must_use]
    pub fn journal_mode(mut self, mode: SqliteJournalMode) -> Self {
        self.journal_mode = Some(mode);
        self
    }

    /// How hard SQLite works to make a commit durable. Defaults to
    /// [`SqliteSynchronous::Full`] (SQLite's default: a commit survives a power loss);
    /// [`SqliteSynchronous::Normal`] is faster in WAL mode and still never corrupts the file,
    /// but may lose the last commits on a power loss.
    #[must_use]
    pub fn synchronous(mut self, synchronous: SqliteSynchronous) -> Self {
        self.synchronous = synchronous;
        self
    }

    /// How long a statement waits for a lock another connection holds before failing with
    /// `SQLITE_BUSY` ("database is locked"). Defaults to [`DEFAULT_BUSY_TIMEOUT`] (5 s); must be
    /// greater than zero and at most [`MAX_BUSY_TIMEOUT`] (10 minutes).
    #[must_use]
    pub fn busy_timeout(mut self, timeout: Duration) -> Self {
        self.busy_timeout = timeout;
        self
    }

    /// Enforce foreign key constraints (`PRAGMA foreign_keys`). Defaults to `true` (SQLite's own
    /// default is off, for compatibility).
    #[must_use]
    pub fn foreign_keys(mut self, on: bool) -> Self {
        self.foreign_keys = on;
        self
    }

    /// How many prepared statements each connection keeps (least recently used are finalized
    /// first). Defaults to [`DEFAULT_STATEMENT_CACHE_CAPACITY`] (100); must be in
    /// 1..=[`MAX_STATEMENT_CACHE_CAPACITY`] (10 000). To run a statement without caching it,
    /// use sqlx's `.persistent(false)` on the query.
    #[must_use]
    pub fn statement_cache_capacity(mut self, capacity: usize) -> Self {
        self.statement_cache_capacity = capacity;
        self
    }

    /// Whether this is an in-memory database.
    pub fn is_in_memory(&self) -> bool {
        matches!(self.database, Database::Memory(_))
    }

    /// The database file, for [`file`](Self::file) (`None` for a URL or an in-memory database).
    pub fn get_path(&self) -> Option<&Path> {
        match &self.database {
            Database::File(path) => Some(path),
            Database::Url(_) | Database::Memory(_) => None,
        }
    }

    /// The configured [`busy_timeout`](Self::busy_timeout).
    pub fn get_busy_timeout(&self) -> Duration {
        self.busy_timeout
    }

    /// The in-memory database, if this is one.
    pub(crate) fn memory(&self) -> Option<&MemoryDatabase> {
        match &self.database {
            Database::Memory(memory) => Some(memory),
            Database::File(_) | Database::Url(_) => None,
        }
    }

    /// The sqlx options these settings open connections with.
    ///
    /// # Errors
    ///
    /// The [`Config`](nebula_resource::ErrorKind::Config) error of
    /// [`validate`](Config::validate) for a URL that does not parse.
    pub fn connect_options(&self) -> Result<SqliteConnectOptions, Error> {
        let options = SqliteConnectOptions::new()
            .busy_timeout(self.busy_timeout)
            .foreign_keys(self.foreign_keys)
            .synchronous(self.synchronous)
            .statement_cache_capacity(self.statement_cache_capacity);
        let (options, read_only) = match &self.database {
            Database::Memory(memory) => {
                let options = options
                    .filename(memory.name())
                    .in_memory(true)
                    .shared_cache(true);
                return Ok(match self.journal_mode {
                    Some(mode) => options.journal_mode(mode),
                    None => options,
                });
            }
            Database::File(path) => {
                let read_only = self.read_only.unwrap_or(false);
                let options = options
                    .filename(path)
                    .read_only(read_only)
                    .create_if_missing(self.create_if_missing.unwrap_or(!read_only));
                (options, read_only)
            }
            Database::Url(url) => {
                let parsed = parse_url(url)?;
                let (url_read_only, url_create) = parsed.mode.unwrap_or((false, true));
                let read_only = self.read_only.unwrap_or(url_read_only);
                let mut options = options
                    .filename(&parsed.path)
                    .read_only(read_only)
                    .create_if_missing(self.create_if_missing.unwrap_or(url_create && !read_only))
                    .immutable(parsed.immutable);
                if let Some(shared) = parsed.shared_cache {
                    options = options.shared_cache(shared);
                }
                if let Some(vfs) = parsed.vfs {
                    options = options.vfs(vfs);
                }
                (options, read_only || parsed.immutable)
            }
        };
        Ok(match self.journal_mode {
            Some(mode) => options.journal_mode(mode),
            None if read_only => options,
            None => options.journal_mode(SqliteJournalMode::Wal),
        })
    }
}

impl Config for SqliteConfig {
    fn validate(&self) -> Result<(), Error> {
        match &self.database {
            Database::File(path) => check_path(path)?,
            Database::Url(url) => {
                parse_url(url)?;
            }
            Database::Memory(_) => {
                if self.read_only == Some(true) {
                    return Err(Error::config(
                        "read_only",
                        "an in-memory database starts empty: it cannot be read-only",
                    ));
                }
                if let Some(mode) = self.journal_mode.filter(|mode| {
                    !matches!(mode, SqliteJournalMode::Memory | SqliteJournalMode::Off)
                }) {
                    return Err(Error::config(
                        "journal_mode",
                        format!(
                            "an in-memory database supports only MEMORY and OFF (got {mode:?})"
                        ),
                    ));
                }
            }
        }
        check_timeout(
            "busy_timeout",
            self.busy_timeout,
            MAX_BUSY_TIMEOUT,
            "must be greater than zero (a zero timeout fails every statement that meets a lock \
             at once)",
        )?;
        if self.statement_cache_capacity == 0
            || self.statement_cache_capacity > MAX_STATEMENT_CACHE_CAPACITY
        {
            return Err(Error::config(
                "statement_cache_capacity",
                format!(
                    "must be in 1..={MAX_STATEMENT_CACHE_CAPACITY} (got {}); to skip the cache \
                     for one statement, use `.persistent(false)` on the query",
                    self.statement_cache_capacity
                ),
            ));
        }
        Ok(())
    }
}

/// A database file path: non-empty UTF-8 without NUL, not one of the names SQLite treats
/// specially.
fn check_path(path: &Path) -> Result<(), Error> {
    let Some(text) = path.to_str() else {
        return Err(Error::config(
            "path",
            "must be valid UTF-8 (SQLite takes UTF-8 names)",
        ));
    };
    if text.trim().is_empty() {
        return Err(Error::config("path", "must not be empty"));
    }
    if text.contains('\0') {
        return Err(Error::config("path", "must not contain a NUL byte"));
    }
    if text == ":memory:" {
        return Err(Error::config(
            "path",
            "`:memory:` would give every connection an empty database of its own: use \
             `SqliteConfig::in_memory()`",
        ));
    }
    if text.starts_with("file:") {
        return Err(Error::config(
            "path",
            "must be a plain path, not a `file:` URI: use `SqliteConfig::new(\"sqlite:…\")` for \
             parameters",
        ));
    }
    Ok(())
}

/// Parse a `sqlite:` URL. Messages show it through [`redact_url`], in case a parameter holds a
/// secret.
fn parse_url(url: &str) -> Result<ParsedUrl, Error> {
    const EXPECTED: &str =
        "expected `sqlite:path`, `sqlite://path`, `sqlite:///absolute/path` or `sqlite::memory:`";
    let shown = redact_url(url);
    if url.trim().is_empty() {
        return Err(Error::config("url", "must not be empty"));
    }
    let Some(rest) = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
    else {
        return Err(Error::config(
            "url",
            format!("scheme must be `sqlite` in `{shown}`; {EXPECTED}"),
        ));
    };
    let (path, query) = match rest.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (rest, None),
    };
    let Some(path) = decode_percent(path) else {
        return Err(Error::config(
            "url",
            format!("the path in `{shown}` is not valid percent-encoded UTF-8"),
        ));
    };
    if path.trim().is_empty() {
        return Err(Error::config(
            "url",
            format!("`{shown}` names no database file; {EXPECTED}"),
        ));
    }
    if path == ":memory:" {
        return Err(Error::config(
            "url",
            format!(
                "`{shown}`: write `sqlite::memory:` alone (no parameters) for a shared in-memory database"
            ),
        ));
    }
    let mut parsed = ParsedUrl {
        path: PathBuf::from(path),
        mode: None,
        shared_cache: None,
        immutable: false,
        vfs: None,
    };
    for (key, value) in query_parameters(query) {
        let value = value.unwrap_or("");
        let bad =
            |rule: &str| Error::config("url", format!("parameter `{key}` in `{shown}` {rule}"));
        if !URL_PARAMETERS.contains(&key) {
            return Err(Error::config(
                "url",
                format!(
                    "unknown parameter in `{shown}`; known: {} (set the others with \
                     `SqliteConfig` methods)",
                    URL_PARAMETERS.join(", ")
                ),
            ));
        }
        match key {
            "mode" => {
                parsed.mode = Some(match value {
                    "ro" => (true, false),
                    "rw" => (false, false),
                    "rwc" => (false, true),
                    "memory" => {
                        return Err(bad(
                            "`memory` would open a database not kept alive for the pool: use \
                             `sqlite::memory:` or `SqliteConfig::in_memory()`",
                        ));
                    }
                    _ => return Err(bad("must be `ro`, `rw` or `rwc`")),
                });
            }
            "cache" => {
                parsed.shared_cache = Some(match value {
                    "shared" => true,
                    "private" => false,
                    _ => return Err(bad("must be `shared` or `private`")),
                });
            }
            "immutable" => {
                parsed.immutable = match value {
                    "true" | "1" => true,
                    "false" | "0" => false,
                    _ => return Err(bad("must be `true` or `false`")),
                };
            }
            // `vfs`, the last of `URL_PARAMETERS`.
            _ => match decode_percent(value) {
                Some(vfs) if !vfs.is_empty() => parsed.vfs = Some(vfs),
                Some(_) => return Err(bad("must not be empty")),
                None => return Err(bad("is not valid percent-encoded UTF-8")),
            },
        }
    }
    Ok(parsed)
}

impl fmt::Display for SqliteConfig {
    /// The database: `sqlite://<path>`, the URL, or `sqlite::memory:` with the shared name.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.database {
            Database::File(path) => write!(f, "sqlite://{}", path.display()),
            Database::Url(url) => f.write_str(&redact_url(url)),
            Database::Memory(memory) => write!(f, "sqlite::memory: ({})", memory.name()),
        }
    }
}

impl fmt::Debug for SqliteConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let database = match &self.database {
            Database::File(path) => format!("file {}", path.display()),
            Database::Url(url) => format!("url {}", redact_url(url)),
            Database::Memory(memory) => format!("{memory:?}"),
        };
        f.debug_struct("SqliteConfig")
            .field("database", &database)
            .field("create_if_missing", &self.create_if_missing)
            .field("read_only", &self.read_only)
            .field("journal_mode", &self.journal_mode)
            .field("synchronous", &self.synchronous)
            .field("busy_timeout", &self.busy_timeout)
            .field("foreign_keys", &self.foreign_keys)
            .field("statement_cache_capacity", &self.statement_cache_capacity)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use nebula_resource::ErrorKind;

    use super::*;

    #[track_caller]
    fn rejected(config: &SqliteConfig, field: &str) -> String {
        let err = config.validate().expect_err("config must be rejected");
        assert_eq!(err.kind(), ErrorKind::Config, "{err}");
        assert_eq!(err.field(), Some(field), "{err}");
        err.to_string()
    }

    #[test]
    fn files_default_to_wal_created_if_missing() {
        let config = SqliteConfig::file("/tmp/app.db");
        config.validate().unwrap();
        assert_eq!(config.get_path(), Some(Path::new("/tmp/app.db")));
        let options = config.connect_options().unwrap();
        assert_eq!(options.get_filename(), Path::new("/tmp/app.db"));
        let debug = format!("{options:?}");
        assert!(debug.contains("create_if_missing: true"), "{debug}");
        assert!(debug.contains("\"journal_mode\": Some(\"WAL\")"), "{debug}");
        assert!(debug.contains("\"foreign_keys\": Some(\"ON\")"), "{debug}");
        assert!(debug.contains("busy_timeout: 5s"), "{debug}");
    }

    #[test]
    fn read_only_files_keep_their_journal_mode() {
        let options = SqliteConfig::file("/tmp/app.db")
            .read_only(true)
            .connect_options()
            .unwrap();
        let debug = format!("{options:?}");
        assert!(debug.contains("read_only: true"), "{debug}");
        assert!(debug.contains("create_if_missing: false"), "{debug}");
        assert!(debug.contains("\"journal_mode\": None"), "{debug}");
    }

    #[test]
    fn in_memory_databases_share_one_name_per_config() {
        let config = SqliteConfig::in_memory();
        config.validate().unwrap();
        let clone = config.clone();
        let a = config.connect_options().unwrap();
        let b = clone.connect_options().unwrap();
        assert_eq!(a.get_filename(), b.get_filename());
        let other = SqliteConfig::in_memory().connect_options().unwrap();
        assert_ne!(a.get_filename(), other.get_filename());
        let debug = format!("{a:?}");
        assert!(
            debug.contains("in_memory: true") && debug.contains("shared_cache: true"),
            "{debug}"
        );
        assert!(SqliteConfig::new("sqlite::memory:").is_in_memory());
        assert!(SqliteConfig::new(" sqlite://:memory: ").is_in_memory());
        assert!(
            config
                .to_string()
                .starts_with("sqlite::memory: (file:nebula-resource-sqlite-")
        );
    }

    #[test]
    fn urls_parse_into_options() {
        let options = SqliteConfig::new("sqlite://data/app%20one.db?mode=ro&cache=private")
            .connect_options()
            .unwrap();
        assert_eq!(options.get_filename(), Path::new("data/app one.db"));
        let debug = format!("{options:?}");
        assert!(debug.contains("read_only: true"), "{debug}");
        assert!(debug.contains("create_if_missing: false"), "{debug}");

        let options = SqliteConfig::new("sqlite:///var/app.db")
            .connect_options()
            .unwrap();
        assert_eq!(options.get_filename(), Path::new("/var/app.db"));
        assert!(format!("{options:?}").contains("create_if_missing: true"));

        let options = SqliteConfig::new("sqlite:app.db?mode=rw")
            .connect_options()
            .unwrap();
        assert!(format!("{options:?}").contains("create_if_missing: false"));
    }

    #[test]
    fn bad_paths_are_rejected_naming_the_field() {
        rejected(&SqliteConfig::file(""), "path");
        rejected(&SqliteConfig::file("  "), "path");
        rejected(&SqliteConfig::file("a\0b"), "path");
        rejected(&SqliteConfig::file(":memory:"), "path");
        rejected(&SqliteConfig::file("file:app.db?mode=ro"), "path");
    }

    #[test]
    fn bad_urls_are_rejected_naming_the_field() {
        for url in [
            "",
            "app.db",
            "postgres://u:p@h/db",
            "sqlite:",
            "sqlite://",
            "sqlite://?mode=rwc",
            "sqlite:app.db?mode=bogus",
            "sqlite:app.db?mode=memory",
            "sqlite:app.db?cache=sometimes",
            "sqlite:app.db?immutable=maybe",
            "sqlite:app.db?vfs=",
            "sqlite:app.db?journal_mode=wal",
            "sqlite:a%ZZ.db",
            "sqlite://:memory:?cache=shared",
        ] {
            rejected(&SqliteConfig::new(url), "url");
        }
        let text = rejected(&SqliteConfig::new("postgres://u:s3cr3tpw@h/db"), "url");
        assert!(!text.contains("s3cr3tpw"), "{text}");
    }

    #[test]
    fn bad_knobs_are_rejected_naming_the_field() {
        rejected(
            &SqliteConfig::in_memory().busy_timeout(Duration::ZERO),
            "busy_timeout",
        );
        rejected(
            &SqliteConfig::in_memory().busy_timeout(Duration::from_secs(3600)),
            "busy_timeout",
        );
        rejected(
            &SqliteConfig::in_memory().statement_cache_capacity(0),
            "statement_cache_capacity",
        );
        rejected(
            &SqliteConfig::in_memory().statement_cache_capacity(MAX_STATEMENT_CACHE_CAPACITY + 1),
            "statement_cache_capacity",
        );
        rejected(
            &SqliteConfig::in_memory().journal_mode(SqliteJournalMode::Wal),
            "journal_mode",
        );
        rejected(&SqliteConfig::in_memory().read_only(true), "read_only");
        SqliteConfig::in_memory()
            .journal_mode(SqliteJournalMode::Memory)
            .validate()
            .unwrap();
    }

    #[test]
    fn display_and_debug_name_the_database() {
        assert_eq!(SqliteConfig::file("app.db").to_string(), "sqlite://app.db");
        assert_eq!(
            SqliteConfig::new("sqlite:app.db?mode=ro").to_string(),
            "sqlite:app.db?mode=ro"
        );
        let debug = format!("{:?}", SqliteConfig::file("app.db"));
        assert!(debug.contains("file app.db"), "{debug}");
        assert!(debug.contains("busy_timeout: 5s"), "{debug}");
    }
}
