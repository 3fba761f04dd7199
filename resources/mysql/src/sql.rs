//! What a piece of SQL may leave behind on the session that runs it.
//!
//! MySQL tells a client whether a transaction is open only in the status flags of its replies,
//! and sqlx keeps those private; it counts only the transactions begun through its own API. So
//! the pool cannot ask "is this connection back to a fresh state?" without a round trip.
//! Instead, every statement sent through [`MySqlConnection`](crate::MySqlConnection) is
//! classified here before it is sent. The test is conservative: a statement it does not
//! recognise counts as possibly changing the session, which only costs a reconnect (or, with
//! [`OnSessionChange::Keep`](crate::OnSessionChange::Keep), one reset round trip) on release.

/// What running a piece of SQL may leave behind once it has finished: for MySQL,
/// [`Effect::Transaction`] is transaction control (`BEGIN`, `COMMIT`, `SAVEPOINT`,
/// `SET TRANSACTION`), which a `ROLLBACK` ends; [`Effect::Session`] is a change beyond what
/// `ROLLBACK` undoes (variables, temporary tables, table or named locks, the current database,
/// server-side prepared statements) or a statement not recognised.
pub(crate) use nebula_resource_sqlx::Effect;
use nebula_resource_sqlx::lex::{find, is_word_continue, line_end, skip_quoted, word_end};

/// Statements that begin with one of these keywords leave nothing behind, unless they assign a
/// user variable or take a named lock (see [`Statement::word`]).
const CONTAINED_LEADS: &[&str] = &[
    "SELECT",
    "INSERT",
    "UPDATE",
    "DELETE",
    "REPLACE",
    "WITH",
    "VALUES",
    "TABLE",
    "SHOW",
    "EXPLAIN",
    "DESCRIBE",
    "DESC",
    "ALTER",
    "DROP",
    "RENAME",
    "TRUNCATE",
    "GRANT",
    "REVOKE",
    "ANALYZE",
    "OPTIMIZE",
    "REPAIR",
    "CHECK",
    "CHECKSUM",
    "KILL",
    "DO",
    "HELP",
    "CACHE",
    "PURGE",
    "INSTALL",
    "UNINSTALL",
    "UNLOCK",
];

/// Leads that control the transaction, whatever follows.
const TRANSACTION_LEADS: &[&str] = &["COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE"];

/// Built-in functions whose effect outlives the statement that calls them.
const SESSION_FUNCTIONS: &[&str] = &[
    "GET_LOCK",
    "SERVICE_GET_READ_LOCKS",
    "SERVICE_GET_WRITE_LOCKS",
];

/// Classify `sql`, which may hold several statements separated by `;`.
///
/// Comments, string literals and quoted identifiers are skipped, so a `;` or a keyword inside
/// them does not count. Whether a backslash escapes a quote depends on the session's
/// `NO_BACKSLASH_ESCAPES` mode, which the pool cannot see: SQL holding a backslash is read both
/// ways and the greater effect wins. SQL that does not lex (an unterminated literal or comment)
/// and executable comments (`/*! … */`, `/*M! … */`) count as [`Effect::Session`].
pub(crate) fn effect_of(sql: &str) -> Effect {
    let effect = scan(sql, true);
    if effect == Effect::Session || !sql.contains('\\') {
        return effect;
    }
    effect.max(scan(sql, false))
}

fn scan(sql: &str, backslash_escapes: bool) -> Effect {
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
            b'#' => i = line_end(bytes, i),
            // `--` starts a comment only when followed by a space or a control character.
            b'-' if bytes.get(i + 1) == Some(&b'-')
                && bytes.get(i + 2).is_none_or(|&c| c <= b' ') =>
            {
                i = line_end(bytes, i);
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                let rest = &bytes[i + 2..];
                if rest.starts_with(b"!") || rest.starts_with(b"M!") {
                    // Executable comment: its content runs on the server.
                    return Effect::Session;
                }
                match find(rest, b"*/") {
                    Some(end) => i += 2 + end + 2,
                    None => return Effect::Session,
                }
            }
            b'\'' | b'"' => match skip_quoted(bytes, i, b, backslash_escapes) {
                Some(end) => {
                    statement.other();
                    i = end;
                }
                None => return Effect::Session,
            },
            b'`' => match skip_quoted(bytes, i, b'`', false) {
                Some(end) => {
                    statement.word(&sql[i + 1..end - 1], true);
                    i = end;
                }
                None => return Effect::Session,
            },
            b'@' => {
                if bytes.get(i + 1) == Some(&b'@') {
                    // A system variable (`@@sql_mode`, `@@session.time_zone`): only read here;
                    // writing one needs `SET`, classified by its lead.
                    i += 2;
                    while i < bytes.len() && (is_word_continue(bytes[i]) || bytes[i] == b'.') {
                        i += 1;
                    }
                    statement.other();
                } else {
                    i += 1;
                    match bytes.get(i) {
                        Some(&quote @ (b'\'' | b'"' | b'`')) => {
                            match skip_quoted(bytes, i, quote, backslash_escapes) {
                                Some(end) => i = end,
                                None => return Effect::Session,
                            }
                        }
                        _ => {
                            while i < bytes.len()
                                && (is_word_continue(bytes[i]) || bytes[i] == b'.')
                            {
                                i += 1;
                            }
                        }
                    }
                    statement.user_variable();
                }
            }
            b':' if bytes.get(i + 1) == Some(&b'=') => {
                // `:=` assigns a user variable, outside `SET` too (`SELECT @n := @n + 1`).
                statement.assignment();
                i += 2;
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
            b')' => {
                statement.close();
                i += 1;
            }
            _ => {
                statement.other();
                i += 1;
            }
        }
    }
    effect.max(statement.finish())
}

/// The first keyword of a statement, as far as the classification cares.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Lead {
    Contained,
    /// `CREATE`: contained unless the object is `TEMPORARY`.
    Create,
    /// `FLUSH`: contained unless it takes a lock (`WITH READ LOCK`, `FOR EXPORT`).
    Flush,
    /// `LOAD DATA`: its column list and `SET` clause may assign user variables.
    Load,
    /// `BEGIN` (unless `BEGIN NOT ATOMIC`, a compound statement).
    Begin,
    /// `START` (`START TRANSACTION`, or something else).
    Start,
    /// `COMMIT`, `ROLLBACK`, `SAVEPOINT`, `RELEASE SAVEPOINT`.
    Transaction,
    /// `SET`: `SET TRANSACTION …` is one-shot (a `ROLLBACK` clears it); MariaDB's
    /// `SET STATEMENT … FOR <statement>` is scoped to its statement; any other `SET` changes the
    /// session.
    Set,
    /// `SET STATEMENT … FOR`: its settings end with the statement after `FOR`.
    SetStatement,
    Other,
}

/// The tokens of one statement seen so far, reduced to what the classification needs.
#[derive(Default)]
struct Statement {
    lead: Option<Lead>,
    /// Tokens after the lead keyword.
    tokens: usize,
    /// Parenthesis depth.
    depth: usize,
    /// The previous token was the keyword `INTO` (`SELECT … INTO @total`).
    after_into: bool,
    /// Something already showed that the session may change.
    session: bool,
    /// The statement ended up controlling the transaction.
    transaction: bool,
}

impl Statement {
    fn word(&mut self, word: &str, quoted: bool) {
        if self.session {
            return;
        }
        let is = |name: &str| !quoted && word.eq_ignore_ascii_case(name);
        let Some(lead) = self.lead else {
            self.lead = Some(if quoted {
                Lead::Other
            } else if CONTAINED_LEADS.iter().any(|lead| is(lead)) {
                Lead::Contained
            } else if TRANSACTION_LEADS.iter().any(|lead| is(lead)) {
                self.transaction = true;
                Lead::Transaction
            } else if is("CREATE") {
                Lead::Create
            } else if is("FLUSH") {
                Lead::Flush
            } else if is("LOAD") {
                Lead::Load
            } else if is("BEGIN") {
                self.transaction = true;
                Lead::Begin
            } else if is("START") {
                Lead::Start
            } else if is("SET") {
                Lead::Set
            } else {
                Lead::Other
            });
            return;
        };
        self.tokens += 1;
        let first = self.tokens == 1;
        match lead {
            Lead::Begin if first && is("NOT") => self.session = true,
            Lead::Start if first => {
                if is("TRANSACTION") {
                    self.transaction = true;
                } else {
                    self.lead = Some(Lead::Other);
                }
            }
            // `COMMIT RELEASE`, `ROLLBACK AND NO CHAIN RELEASE`: the server closes the session.
            // (`RELEASE SAVEPOINT a` has `RELEASE` as its lead, not after it.)
            Lead::Transaction if is("RELEASE") => self.session = true,
            Lead::Set if first => {
                if is("TRANSACTION") {
                    self.transaction = true;
                } else if is("STATEMENT") {
                    self.lead = Some(Lead::SetStatement);
                } else {
                    self.session = true;
                }
            }
            Lead::SetStatement if self.depth == 0 && is("FOR") => {
                // The settings before `FOR` last for the statement after it, which is
                // classified on its own.
                *self = Self::default();
                return;
            }
            Lead::Create if is("TEMPORARY") => self.session = true,
            Lead::Flush if is("LOCK") || is("EXPORT") => self.session = true,
            _ => {}
        }
        if SESSION_FUNCTIONS.iter().any(|name| is(name)) {
            self.session = true;
        }
        self.after_into = is("INTO");
    }

    fn user_variable(&mut self) {
        if self.after_into || self.lead == Some(Lead::Load) {
            self.session = true;
        }
        self.other();
    }

    fn assignment(&mut self) {
        self.session = true;
        self.other();
    }

    fn open(&mut self) {
        // `(SELECT 1) UNION (SELECT 2)`: parentheses before the lead keyword are skipped.
        if self.lead.is_some() {
            self.depth += 1;
            self.other();
        }
    }

    fn close(&mut self) {
        self.depth = self.depth.saturating_sub(1);
        self.other();
    }

    fn other(&mut self) {
        if self.lead.is_none() {
            // A statement that does not start with a keyword is not one we know.
            self.lead = Some(Lead::Other);
        } else {
            self.tokens += 1;
        }
        self.after_into = false;
    }

    fn finish(&self) -> Effect {
        match self.lead {
            None => Effect::Contained,
            Some(Lead::Other) => Effect::Session,
            Some(_) if self.session => Effect::Session,
            // `SET` alone, or `SET STATEMENT …` without its `FOR`.
            Some(Lead::Set | Lead::SetStatement) if !self.transaction => Effect::Session,
            Some(Lead::Start) if !self.transaction => Effect::Session,
            Some(_) if self.transaction => Effect::Transaction,
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
    fn queries_dml_and_ddl_are_contained() {
        contained("SELECT 1");
        contained("  select ? + ?");
        contained("(SELECT 1) UNION (SELECT 2)");
        contained("WITH t AS (SELECT 1 AS n) SELECT n FROM t");
        contained("INSERT INTO t (a) VALUES (?) ON DUPLICATE KEY UPDATE a = VALUES(a)");
        contained("INSERT INTO t SET a = 1");
        contained("REPLACE INTO t VALUES (1)");
        contained("UPDATE t SET x = @@max_allowed_packet WHERE id = ?");
        contained("DELETE FROM t WHERE id IN (SELECT id FROM u)");
        contained("SELECT * FROM t FOR UPDATE");
        contained("SELECT * FROM t LOCK IN SHARE MODE");
        contained("SHOW TABLES");
        contained("EXPLAIN SELECT * FROM t");
        contained("CREATE TABLE IF NOT EXISTS t (id BIGINT PRIMARY KEY)");
        contained("DROP TABLE t; TRUNCATE u");
        contained("ALTER TABLE t ADD COLUMN c INT");
        contained("SELECT CONNECTION_ID(), LAST_INSERT_ID(), RELEASE_LOCK('x')");
        contained("SELECT @total, @@session.time_zone");
        contained("SELECT 1 INTO OUTFILE '/tmp/x'");
        contained("KILL 42");
        contained("DO SLEEP(0)");
        contained("FLUSH TABLES");
        contained("UNLOCK TABLES");
        contained("");
        contained("  ;; ");
        contained("-- only a comment");
        contained("# only a comment");
    }

    #[test]
    fn transaction_control_is_undone_by_rollback() {
        for sql in [
            "BEGIN",
            "begin work",
            "START TRANSACTION",
            "start transaction read only",
            "START TRANSACTION WITH CONSISTENT SNAPSHOT",
            "COMMIT",
            "COMMIT AND CHAIN",
            "ROLLBACK",
            "ROLLBACK TO SAVEPOINT a",
            "SAVEPOINT a",
            "RELEASE SAVEPOINT a",
            "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE",
            "set transaction read only",
            "BEGIN; INSERT INTO t VALUES (1)",
            "SELECT 1; COMMIT",
        ] {
            transaction(sql);
        }
    }

    #[test]
    fn session_changes_are_recognised() {
        for sql in [
            "SET @x = 1",
            "SET SESSION sql_mode = ''",
            "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED",
            "set autocommit = 0",
            "SET NAMES latin1",
            "SET time_zone = '+01:00'",
            "SET",
            "SET @@session.wait_timeout = 10",
            "SET STATEMENT max_statement_time = 1",
            "USE other",
            "LOCK TABLES t WRITE",
            "FLUSH TABLES WITH READ LOCK",
            "FLUSH TABLES t FOR EXPORT",
            "CREATE TEMPORARY TABLE scratch (id INT)",
            "create or replace temporary table scratch (id int)",
            "PREPARE s FROM 'SELECT 1'",
            "EXECUTE s",
            "EXECUTE IMMEDIATE 'SET @x = 1'",
            "DEALLOCATE PREPARE s",
            "HANDLER t OPEN",
            "CALL proc()",
            "XA START 'x'",
            "BEGIN NOT ATOMIC SELECT 1; END",
            "START SLAVE",
            "COMMIT RELEASE",
            "ROLLBACK AND NO CHAIN RELEASE",
            "SELECT GET_LOCK('job', 10)",
            "SELECT @n := @n + 1 FROM t",
            "SELECT COUNT(*) INTO @total FROM t",
            "SELECT a, b INTO @a, @b FROM t LIMIT 1",
            "SELECT 1 INTO @`quoted`",
            "DO @x := 1",
            "LOAD DATA INFILE '/tmp/x' INTO TABLE t (@a) SET c = @a",
            "SELECT 1; SET @x = 1; SELECT 2",
            "BEGIN; SET @x = 1",
        ] {
            session(sql);
        }
    }

    #[test]
    fn set_statement_is_scoped_to_its_statement() {
        contained("SET STATEMENT max_statement_time = 5 FOR SELECT * FROM t");
        contained("SET STATEMENT a = 1, b = (SELECT 1 FOR UPDATE) FOR SELECT 2");
        session("SET STATEMENT max_statement_time = 5 FOR SET @x = 1");
        transaction("SET STATEMENT max_statement_time = 5 FOR BEGIN");
    }

    #[test]
    fn literals_comments_and_quoted_identifiers_are_skipped() {
        contained("SELECT 'BEGIN; SET @x = 1'");
        contained("SELECT 'it''s; SET @x = 1'");
        contained("SELECT \"; USE other\"");
        contained("SELECT `BEGIN;` FROM t");
        contained("SELECT `a``b; SET` FROM t");
        contained("SELECT 1 -- ; SET @x = 1\n");
        contained("SELECT 1 # ; SET @x = 1\n");
        contained("SELECT /* ; SET @x = 1 */ 1");
        contained("/* lead */ SELECT 1");
        contained("SELECT /*+ MAX_EXECUTION_TIME(1000) */ * FROM t");
        contained("SELECT 'GET_LOCK(''x'', 1)'");
        contained("SELECT 1 /* GET_LOCK('x', 1) */");
        contained("SELECT 2--1");
        contained("SELECT ':='");
    }

    #[test]
    fn backslashes_are_read_both_ways() {
        // With backslash escapes (the default) this is one string; with `NO_BACKSLASH_ESCAPES`
        // the `SET` runs. Not knowing the mode, the classifier takes the worse.
        session("SELECT 'a\\'; SET @x = 1; -- '");
        contained("SELECT 'a\\\\b'");
    }

    #[test]
    fn what_does_not_lex_or_runs_hidden_counts_as_a_session_change() {
        session("SELECT 'unterminated");
        session("SELECT \"unterminated");
        session("SELECT `unterminated");
        session("SELECT /* unterminated");
        session("SELECT 1 /*!50000 , @x := 1 */");
        session("/*M!100000 SET @x = 1 */");
        session("1 + 1");
        session("`quoted` statement");
        session("?");
    }
}
