//! What a piece of SQL may leave behind on the connection that runs it.
//!
//! sqlx counts only the transactions begun through its own API, and keeps SQLite's
//! "is this connection in autocommit mode?" to itself. So every statement sent through
//! [`SqliteConnection`](crate::SqliteConnection) is classified here before it is sent. The test
//! is conservative: a statement it does not recognise counts as possibly changing the
//! connection, which only costs a reconnect (cheap for SQLite) on release.

/// What running a piece of SQL may leave behind once it has finished: for SQLite,
/// [`Effect::Transaction`] is transaction control (`BEGIN`, `COMMIT`, `END`, `ROLLBACK`,
/// `SAVEPOINT`, `RELEASE`), which a `ROLLBACK` ends; [`Effect::Session`] is a change beyond what
/// `ROLLBACK` undoes (a `PRAGMA` setting, `ATTACH`/`DETACH`, a temporary table, view or
/// trigger) or a statement not recognised. Queries, DML, DDL and `PRAGMA` queries are
/// [`Effect::Contained`].
pub(crate) use nebula_resource_sqlx::Effect;
use nebula_resource_sqlx::lex::{self, find, is_word_continue, line_end, word_end};

/// Statements that begin with one of these keywords leave nothing behind (`CREATE` unless the
/// object is temporary; see [`Statement::word`]).
const CONTAINED_LEADS: &[&str] = &[
    "SELECT", "INSERT", "UPDATE", "DELETE", "REPLACE", "WITH", "VALUES", "CREATE", "ALTER", "DROP",
    "ANALYZE", "REINDEX", "VACUUM", "EXPLAIN",
];

/// Leads that control the transaction.
const TRANSACTION_LEADS: &[&str] = &["BEGIN", "COMMIT", "END", "ROLLBACK", "SAVEPOINT", "RELEASE"];

/// Pragmas that take an argument in parentheses only to run a query or a one-off operation:
/// `PRAGMA table_info(t)` reads, `PRAGMA wal_checkpoint(TRUNCATE)` acts, neither changes a
/// setting. Any other pragma given a value (`= v` or `(v)`) changes the connection.
const QUERY_PRAGMAS: &[&str] = &[
    "table_info",
    "table_xinfo",
    "table_list",
    "index_info",
    "index_xinfo",
    "index_list",
    "foreign_key_list",
    "foreign_key_check",
    "integrity_check",
    "quick_check",
    "wal_checkpoint",
    "optimize",
    "incremental_vacuum",
];

/// Classify `sql`, which may hold several statements separated by `;`.
///
/// Comments, string literals and quoted identifiers (`"…"`, `` `…` ``, `[…]`) are skipped, so a
/// `;` or a keyword inside them does not count. SQL that does not lex (an unterminated literal)
/// counts as [`Effect::Session`].
pub(crate) fn effect_of(sql: &str) -> Effect {
    let bytes = sql.as_bytes();
    let mut effect = Effect::Contained;
    let mut statement = Statement::default();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b';' => {
                effect = effect.max(statement.finish());
                if effect == Effect::Session {
                    return effect;
                }
                statement = Statement::default();
                i += 1;
            }
            b'-' if bytes.get(i + 1) == Some(&b'-') => {
                i = line_end(bytes, i);
            }
            // SQLite lets a block comment run to the end of the input.
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                i = find(&bytes[i + 2..], b"*/").map_or(bytes.len(), |end| i + 2 + end + 2);
            }
            b'\'' => match skip_quoted(bytes, i, b'\'') {
                Some(end) => {
                    statement.other();
                    i = end;
                }
                None => return Effect::Session,
            },
            b'"' | b'`' | b'[' => {
                let close = if b == b'[' { b']' } else { b };
                match skip_quoted(bytes, i, close) {
                    Some(end) => {
                        statement.word(&sql[i + 1..end - 1], true);
                        i = end;
                    }
                    None => return Effect::Session,
                }
            }
            b if is_word_continue(b) => {
                let end = word_end(bytes, i);
                statement.word(&sql[i..end], false);
                i = end;
            }
            b if b.is_ascii_whitespace() => i += 1,
            b'(' => {
                statement.open();
                i += 1;
            }
            b'=' => {
                statement.equals();
                i += 1;
            }
            // A parameter (`?1`, `:name`, `@name`, `$name`) or an operator.
            _ => {
                statement.other();
                i += 1;
            }
        }
    }
    effect.max(statement.finish())
}

/// The end (exclusive) of the literal opened at `start` and closed by `close`; a doubled `close`
/// stands for itself (except in `[…]`, where it cannot appear). `None` if not closed.
fn skip_quoted(bytes: &[u8], start: usize, close: u8) -> Option<usize> {
    if close == b']' {
        return find(&bytes[start + 1..], b"]").map(|end| start + 1 + end + 1);
    }
    lex::skip_quoted(bytes, start, close, false)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Lead {
    Contained,
    /// `CREATE`: contained unless the object is temporary.
    Create,
    Transaction,
    /// `PRAGMA`: a query unless it is given a value.
    Pragma,
    Other,
}

/// The tokens of one statement seen so far, reduced to what the classification needs.
#[derive(Default)]
struct Statement {
    lead: Option<Lead>,
    /// The last word seen (for `PRAGMA name(…)`), lower-cased compare only.
    last_word: Option<String>,
    /// Something already showed that the connection may change.
    session: bool,
}

impl Statement {
    fn word(&mut self, word: &str, quoted: bool) {
        if self.session {
            return;
        }
        let is = |name: &str| word.eq_ignore_ascii_case(name);
        let Some(lead) = self.lead else {
            self.lead = Some(if quoted {
                Lead::Other
            } else if is("CREATE") {
                Lead::Create
            } else if is("PRAGMA") {
                Lead::Pragma
            } else if CONTAINED_LEADS.iter().any(|lead| is(lead)) {
                Lead::Contained
            } else if TRANSACTION_LEADS.iter().any(|lead| is(lead)) {
                Lead::Transaction
            } else {
                Lead::Other
            });
            return;
        };
        // `CREATE TEMP TABLE`, `CREATE TEMPORARY VIEW`, `CREATE TABLE temp.t`.
        if lead == Lead::Create && (is("TEMP") || is("TEMPORARY")) {
            self.session = true;
        }
        if lead == Lead::Pragma {
            self.last_word = Some(word.to_owned());
        }
    }

    fn open(&mut self) {
        match self.lead {
            None => {}
            Some(Lead::Pragma) => {
                let query = self.last_word.as_deref().is_some_and(|name| {
                    QUERY_PRAGMAS
                        .iter()
                        .any(|pragma| name.eq_ignore_ascii_case(pragma))
                });
                if !query {
                    self.session = true;
                }
            }
            Some(_) => {}
        }
    }

    fn equals(&mut self) {
        if self.lead == Some(Lead::Pragma) {
            self.session = true;
        }
        self.other();
    }

    fn other(&mut self) {
        if self.lead.is_none() {
            // A statement that does not start with a keyword is not one we know.
            self.lead = Some(Lead::Other);
        }
    }

    fn finish(&self) -> Effect {
        match self.lead {
            None => Effect::Contained,
            Some(Lead::Other) => Effect::Session,
            Some(_) if self.session => Effect::Session,
            Some(Lead::Transaction) => Effect::Transaction,
            Some(_) => Effect::Contained,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Effect, effect_of};

    #[track_caller]
    fn contained(sql: &str) {
        assert_eq!(effect_of(sql), Effect::Contained, "{sql:?}");
    }

    #[track_caller]
    fn transaction(sql: &str) {
        assert_eq!(effect_of(sql), Effect::Transaction, "{sql:?}");
    }

    #[track_caller]
    fn session(sql: &str) {
        assert_eq!(effect_of(sql), Effect::Session, "{sql:?}");
    }

    #[test]
    fn queries_dml_ddl_and_pragma_queries_are_contained() {
        contained("SELECT 1");
        contained("select ?1 + :two + @three + $four");
        contained("WITH t(n) AS (VALUES (1)) SELECT n FROM t");
        contained("INSERT INTO t (a) VALUES (?) ON CONFLICT (a) DO UPDATE SET a = excluded.a");
        contained("REPLACE INTO t VALUES (1)");
        contained("UPDATE t SET x = 1 WHERE id = ?");
        contained("DELETE FROM t");
        contained("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY)");
        contained("CREATE INDEX i ON t (id)");
        contained("DROP TABLE t; ALTER TABLE u ADD COLUMN c");
        contained("VACUUM");
        contained("EXPLAIN QUERY PLAN SELECT * FROM t");
        contained("PRAGMA journal_mode");
        contained("pragma main.user_version");
        contained("PRAGMA table_info(t)");
        contained("PRAGMA main.index_list('t')");
        contained("PRAGMA foreign_key_check");
        contained("PRAGMA wal_checkpoint(TRUNCATE)");
        contained("");
        contained(" ;; ");
        contained("-- a comment");
    }

    #[test]
    fn transaction_control_is_undone_by_rollback() {
        for sql in [
            "BEGIN",
            "BEGIN IMMEDIATE TRANSACTION",
            "begin exclusive",
            "COMMIT",
            "END TRANSACTION",
            "ROLLBACK",
            "ROLLBACK TO SAVEPOINT s",
            "SAVEPOINT s",
            "RELEASE s",
            "BEGIN; INSERT INTO t VALUES (1)",
        ] {
            transaction(sql);
        }
    }

    #[test]
    fn connection_changes_are_recognised() {
        for sql in [
            "PRAGMA foreign_keys = OFF",
            "PRAGMA foreign_keys(0)",
            "PRAGMA main.synchronous = NORMAL",
            "PRAGMA journal_mode = DELETE",
            "PRAGMA busy_timeout = 0",
            "ATTACH DATABASE 'other.db' AS other",
            "DETACH other",
            "CREATE TEMP TABLE scratch (id)",
            "CREATE TEMPORARY VIEW v AS SELECT 1",
            "CREATE TABLE temp.scratch (id)",
            "CREATE TABLE \"temp\".scratch (id)",
            "CREATE TEMP TRIGGER t AFTER INSERT ON x BEGIN SELECT 1; END",
            "SELECT 1; PRAGMA foreign_keys = OFF",
            "\"quoted\" statement",
            "1 + 1",
            "SELECT 'unterminated",
            "SELECT [unterminated",
        ] {
            session(sql);
        }
    }

    #[test]
    fn literals_comments_and_quoted_identifiers_are_skipped() {
        contained("SELECT 'BEGIN; PRAGMA foreign_keys = OFF'");
        contained("SELECT 'it''s; ATTACH'");
        contained("SELECT \"a;b\", `c;d`, [e;f] FROM t");
        contained("SELECT 1 -- ; PRAGMA foreign_keys = OFF\n");
        contained("SELECT /* ; ATTACH 'x' AS y */ 1");
        contained("SELECT 1 /* runs to the end ; ATTACH");
        contained("INSERT INTO t (temp) VALUES (1)");
        contained("SELECT * FROM t WHERE a = 1");
    }
}
