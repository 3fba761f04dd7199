//! What a piece of SQL may leave behind on a session: the cheap, local test that lets a
//! connection whose every statement was seen go back to the pool without a reset round trip.
//!
//! PostgreSQL reports the transaction status after every statement, but sqlx keeps it private,
//! so the pool cannot ask "is this connection idle?" without a round trip. Instead, every
//! statement sent through [`PostgresConnection`](crate::PostgresConnection) is classified here
//! before it is sent. The test is conservative: anything it does not recognise as contained in
//! its own statement counts as possibly changing the session, which only costs one reset round
//! trip on release.

/// What running a piece of SQL may leave behind once it has finished. PostgreSQL's classifier
/// uses two of its values: [`Effect::Contained`], nothing outlives the statements (plain
/// queries, DML, most DDL, `SET LOCAL`); [`Effect::Session`], the session may have changed (an
/// open transaction (`BEGIN`), settings (`SET`), temporary tables, `LISTEN`, cursors, SQL-level
/// prepared statements, session advisory locks, or a statement not recognised), which a reset
/// undoes.
pub(crate) use nebula_resource_sqlx::Effect;
use nebula_resource_sqlx::lex::{is_word_continue, line_end, skip_quoted, word_end};

/// Statements that begin with one of these keywords leave nothing behind, unless they mention a
/// session-scoped function or create a temporary object (see [`Statement::word`]).
const CONTAINED_LEADS: &[&str] = &[
    "SELECT",
    "INSERT",
    "UPDATE",
    "DELETE",
    "WITH",
    "VALUES",
    "TABLE",
    "MERGE",
    "SHOW",
    "EXPLAIN",
    "COPY",
    "NOTIFY",
    "CREATE",
    "ALTER",
    "DROP",
    "TRUNCATE",
    "GRANT",
    "REVOKE",
    "COMMENT",
    "ANALYZE",
    "ANALYSE",
    "VACUUM",
    "REINDEX",
    "CLUSTER",
    "REFRESH",
    "CHECKPOINT",
    "SECURITY",
    "IMPORT",
];

/// Built-in functions whose effect outlives the statement that calls them.
const SESSION_FUNCTIONS: &[&str] = &[
    "set_config",
    "setseed",
    "pg_advisory_lock",
    "pg_advisory_lock_shared",
    "pg_try_advisory_lock",
    "pg_try_advisory_lock_shared",
    "dblink_connect",
    "dblink_connect_u",
    "pg_create_logical_replication_slot",
    "pg_create_physical_replication_slot",
];

/// Classify `sql`, which may hold several statements separated by `;`.
///
/// Comments, string literals (standard, `E'…'` escape strings), quoted identifiers and
/// dollar-quoted bodies are skipped, so a `;` or a keyword inside them does not count. SQL that
/// does not lex (an unterminated literal or comment) counts as [`Effect::Session`].
pub(crate) fn effect_of(sql: &str) -> Effect {
    let bytes = sql.as_bytes();
    let mut statement = Statement::default();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b';' => {
                if statement.finish() == Effect::Session {
                    return Effect::Session;
                }
                statement = Statement::default();
                i += 1;
            }
            b'-' if bytes.get(i + 1) == Some(&b'-') => {
                i = line_end(bytes, i);
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => match skip_block_comment(bytes, i) {
                Some(end) => i = end,
                None => return Effect::Session,
            },
            b'\'' => match skip_quoted(bytes, i, b'\'', false) {
                Some(end) => {
                    statement.other();
                    i = end;
                }
                None => return Effect::Session,
            },
            b'"' => match skip_quoted(bytes, i, b'"', false) {
                Some(end) => {
                    statement.word(&sql[i + 1..end - 1], true);
                    i = end;
                }
                None => return Effect::Session,
            },
            b'$' => match dollar_quote_end(bytes, i) {
                Some(Some(end)) => {
                    statement.other();
                    i = end;
                }
                Some(None) => return Effect::Session,
                // A positional parameter (`$1`) or an operator character.
                None => {
                    statement.other();
                    i += 1;
                }
            },
            b if is_word_start(b) => {
                let end = word_end(bytes, i);
                // `E'…'`: an escape string, where a backslash escapes the quote.
                if end - i == 1 && matches!(b, b'e' | b'E') && bytes.get(end) == Some(&b'\'') {
                    match skip_quoted(bytes, end, b'\'', true) {
                        Some(after) => {
                            statement.other();
                            i = after;
                        }
                        None => return Effect::Session,
                    }
                } else {
                    statement.word(&sql[i..end], false);
                    i = end;
                }
            }
            b if b.is_ascii_whitespace() => i += 1,
            b'(' if statement.lead.is_none() => i += 1,
            _ => {
                statement.other();
                i += 1;
            }
        }
    }
    statement.finish()
}

fn is_word_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b >= 0x80
}

/// The end (exclusive) of the nested `/* … */` comment starting at `start`, or `None` if it is
/// not closed.
fn skip_block_comment(bytes: &[u8], start: usize) -> Option<usize> {
    let mut depth = 0_usize;
    let mut i = start;
    while i + 1 < bytes.len() {
        match (bytes[i], bytes[i + 1]) {
            (b'/', b'*') => {
                depth += 1;
                i += 2;
            }
            (b'*', b'/') => {
                depth -= 1;
                i += 2;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => i += 1,
        }
    }
    None
}

/// For a `$` at `start`: `None` if it does not open a dollar quote (`$1`, an operator);
/// `Some(Some(end))` with the end (exclusive) of the `$tag$ … $tag$` body; `Some(None)` if the
/// body is not closed.
fn dollar_quote_end(bytes: &[u8], start: usize) -> Option<Option<usize>> {
    let tag_len = bytes[start + 1..]
        .iter()
        .position(|&c| c == b'$')
        .filter(|&len| {
            let tag = &bytes[start + 1..start + 1 + len];
            tag.first().is_none_or(|&c| is_word_start(c) && c != b'$')
                && tag.iter().all(|&c| is_word_continue(c) && c != b'$')
        })?;
    let delimiter = &bytes[start..start + tag_len + 2];
    let body = start + delimiter.len();
    Some(
        bytes[body..]
            .windows(delimiter.len())
            .position(|window| window == delimiter)
            .map(|at| body + at + delimiter.len()),
    )
}

/// The tokens of one statement seen so far, reduced to what the classification needs.
#[derive(Default)]
struct Statement {
    /// The first keyword, upper-cased when it is one that matters.
    lead: Option<Lead>,
    /// The previous token was the keyword `INTO` (`SELECT … INTO TEMP t`).
    after_into: bool,
    /// Tokens after the lead keyword.
    tokens: usize,
    /// A `SET` whose effect ends with the transaction: `SET LOCAL`, `SET TRANSACTION`,
    /// `SET CONSTRAINTS`.
    scoped_set: bool,
    /// Something already showed that the session may change.
    session: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Lead {
    Contained,
    Create,
    Set,
    Other,
}

impl Statement {
    fn word(&mut self, word: &str, quoted: bool) {
        if self.session {
            return;
        }
        let Some(lead) = self.lead else {
            self.lead = Some(if quoted {
                Lead::Other
            } else if word.eq_ignore_ascii_case("CREATE") {
                Lead::Create
            } else if word.eq_ignore_ascii_case("SET") {
                Lead::Set
            } else if CONTAINED_LEADS
                .iter()
                .any(|lead| word.eq_ignore_ascii_case(lead))
            {
                Lead::Contained
            } else {
                Lead::Other
            });
            return;
        };
        self.tokens += 1;
        let matches = |name: &str| {
            if quoted {
                word == name
            } else {
                word.eq_ignore_ascii_case(name)
            }
        };
        if lead == Lead::Set && self.tokens == 1 && !quoted {
            self.scoped_set = ["LOCAL", "TRANSACTION", "CONSTRAINTS"]
                .iter()
                .any(|kw| matches(kw));
        }
        let temporary = !quoted && (matches("TEMP") || matches("TEMPORARY"));
        if (temporary && (lead == Lead::Create || self.after_into))
            || SESSION_FUNCTIONS.iter().any(|name| matches(name))
            || word
                .get(..7)
                .is_some_and(|prefix| prefix.eq_ignore_ascii_case("pg_temp"))
        {
            self.session = true;
        }
        self.after_into = !quoted && matches("INTO");
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
            // Any `SET` but the transaction-scoped ones changes the session.
            Some(Lead::Set) if !self.scoped_set => Effect::Session,
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
    fn session(sql: &str) {
        assert_eq!(effect_of(sql), Effect::Session, "{sql:?}");
    }

    #[test]
    fn queries_and_dml_are_contained() {
        contained("SELECT 1");
        contained("  select $1::int8 + $2");
        contained("(SELECT 1) UNION (SELECT 2)");
        contained("WITH moved AS (DELETE FROM a RETURNING *) INSERT INTO b SELECT * FROM moved");
        contained("INSERT INTO t (temp) VALUES ($1)");
        contained("UPDATE t SET x = 1 WHERE id = $1");
        contained("VALUES (1), (2)");
        contained("SHOW search_path");
        contained("EXPLAIN ANALYZE SELECT * FROM t");
        contained("CREATE TABLE IF NOT EXISTS t (id int8 PRIMARY KEY)");
        contained("DROP TABLE t; TRUNCATE u");
        contained("NOTIFY jobs, 'ready'");
        contained("SELECT pg_advisory_xact_lock(1)");
        contained("SELECT pg_advisory_unlock(1)");
        contained("");
        contained("  ;; ");
        contained("-- only a comment");
    }

    #[test]
    fn transaction_control_and_session_commands_change_the_session() {
        for sql in [
            "BEGIN",
            "begin isolation level serializable",
            "START TRANSACTION",
            "COMMIT",
            "ROLLBACK",
            "SAVEPOINT a",
            "SET search_path = app",
            "set session timezone to 'UTC'",
            "SET SESSION AUTHORIZATION other",
            "SET ROLE reader",
            "SET",
            "SET \"local\" = 1",
            "SET = 1",
            "RESET ALL",
            "DISCARD ALL",
            "LISTEN jobs",
            "UNLISTEN *",
            "PREPARE q AS SELECT 1",
            "DEALLOCATE q",
            "DECLARE c CURSOR WITH HOLD FOR SELECT 1",
            "CLOSE c",
            "LOCK TABLE t",
            "DO $$ BEGIN PERFORM 1; END $$",
            "CALL proc()",
            "LOAD 'auto_explain'",
            "VACUUM t; SET x.y = 1",
        ] {
            session(sql);
        }
    }

    #[test]
    fn set_local_and_transaction_scoped_settings_are_contained() {
        contained("SET LOCAL statement_timeout = 1000");
        contained("set transaction isolation level repeatable read");
        contained("SET CONSTRAINTS ALL DEFERRED");
    }

    #[test]
    fn session_functions_and_temporary_objects_change_the_session() {
        session("SELECT set_config('search_path', 'app', false)");
        session("select PG_CATALOG.SET_CONFIG('a.b', 'c', false)");
        session("SELECT \"set_config\"('a.b', 'c', false)");
        session("SELECT pg_advisory_lock(42)");
        session("SELECT pg_try_advisory_lock_shared(1, 2)");
        session("SELECT setseed(0.5)");
        session("CREATE TEMP TABLE scratch (id int)");
        session("create global temporary table scratch (id int)");
        session("CREATE TABLE pg_temp.scratch (id int)");
        session("SELECT * INTO TEMP scratch FROM t");
        session("SELECT * INTO TEMPORARY TABLE scratch FROM t");
    }

    #[test]
    fn every_statement_of_a_batch_counts() {
        session("SELECT 1; BEGIN");
        session("INSERT INTO t VALUES (1); SET search_path = x; SELECT 2");
        contained("SELECT 1; SELECT 2;");
    }

    #[test]
    fn literals_comments_and_quoted_text_are_skipped() {
        contained("SELECT 'BEGIN; SET x = 1'");
        contained("SELECT 'it''s; BEGIN'");
        contained("SELECT E'\\'; BEGIN'");
        contained("SELECT e'a\\\\'; SELECT 2");
        contained("SELECT \"BEGIN;\" FROM t");
        contained("SELECT $$; BEGIN$$, $tag$ ; SET x = 1 $tag$");
        contained("SELECT $1, $2 FROM t WHERE a = $3");
        contained("SELECT 1 -- ; BEGIN\n");
        contained("SELECT /* ; BEGIN /* nested ; */ still comment */ 1");
        contained("/* lead */ SELECT 1");
        contained("-- lead\nSELECT 1");
        contained("SELECT 'set_config(''a'', ''b'', false)'");
        contained("SELECT 1 /* pg_advisory_lock(1) */");
    }

    #[test]
    fn every_prefix_of_tricky_sql_is_classified_without_panicking() {
        let tricky = "SELECT 'ä''b', E'\\\'ö', \"ü\"\"x\", $τ$ ; $τ$, $1, /* é /* ; */ */ 1 -- ñ\n\
                      ; SET LOCAL x = 'y'; créer; $$";
        for (at, _) in tricky.char_indices() {
            let _ = effect_of(&tricky[..at]);
            let _ = effect_of(&tricky[at..]);
        }
        assert_eq!(effect_of(tricky), Effect::Session);
    }

    #[test]
    fn what_does_not_lex_counts_as_changing_the_session() {
        session("SELECT 'unterminated");
        session("SELECT \"unterminated");
        session("SELECT /* unterminated");
        session("SELECT $$ unterminated");
        session("SELECT E'unterminated\\'");
        session("1 + 1");
        session("\"quoted\" statement");
    }
}
