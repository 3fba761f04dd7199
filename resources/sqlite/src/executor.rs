//! sqlx's `Executor` for [`SqliteConnection`] and [`SqliteTransaction`]: every statement is
//! classified before it is sent (may it open a transaction, change the connection?) and its
//! outcome recorded (was it cut off, was the error fatal?), then handed to the sqlx connection
//! underneath.
//!
//! The wrappers add one small allocation per statement and a scan of the SQL text; nothing is
//! run that the caller did not ask for.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::future::BoxFuture;
use futures_util::stream::{BoxStream, Stream, StreamExt};
use sqlx::error::BoxDynError;
use sqlx::sqlite::{
    SqliteArguments, SqliteQueryResult, SqliteRow, SqliteStatement, SqliteTypeInfo,
};
use sqlx::{Describe, Either, Execute, Executor, SqlStr, Sqlite};

use crate::connection::{Session, SqliteConnection};
use crate::sql::{Effect, effect_of};
use crate::transaction::SqliteTransaction;

/// A query taken apart so its SQL can be read before it is handed on: `Execute::sql` consumes
/// the query, so everything else is taken first and handed back unchanged.
struct Inspected {
    sql: SqlStr,
    statement: Option<SqliteStatement>,
    arguments: Option<Result<Option<SqliteArguments>, BoxDynError>>,
    persistent: bool,
}

impl Inspected {
    fn new<'q, E: Execute<'q, Sqlite>>(mut query: E) -> (Self, Effect) {
        let statement = query.statement().cloned();
        let arguments = query.take_arguments();
        let persistent = query.persistent();
        let sql = query.sql();
        let effect = effect_of(sql.as_str());
        let inspected = Self {
            sql,
            statement,
            arguments: Some(arguments),
            persistent,
        };
        (inspected, effect)
    }
}

impl Execute<'_, Sqlite> for Inspected {
    fn sql(self) -> SqlStr {
        self.sql
    }

    fn statement(&self) -> Option<&SqliteStatement> {
        self.statement.as_ref()
    }

    fn take_arguments(&mut self) -> Result<Option<SqliteArguments>, BoxDynError> {
        self.arguments.take().unwrap_or(Ok(None))
    }

    fn persistent(&self) -> bool {
        self.persistent
    }
}

/// A result stream whose start, end and errors are recorded in the session.
struct Watched<'e, S> {
    inner: S,
    session: &'e mut Session,
    /// The effect to record on the first poll (the statement is only sent then).
    effect: Option<Effect>,
    done: bool,
}

impl<T, S> Stream for Watched<'_, S>
where
    S: Stream<Item = Result<T, sqlx::Error>> + Unpin,
{
    type Item = Result<T, sqlx::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        if let Some(effect) = this.effect.take() {
            this.session.start(effect);
        }
        let polled = this.inner.poll_next_unpin(cx);
        match &polled {
            Poll::Ready(None) => {
                this.session.finish(None);
                this.done = true;
            }
            // sqlx ends a result stream at its first error.
            Poll::Ready(Some(Err(err))) => {
                this.session.finish(Some(err));
                this.done = true;
            }
            Poll::Ready(Some(Ok(_))) | Poll::Pending => {}
        }
        polled
    }
}

/// Run `inner` recording its start (with `effect`) and its outcome in `session`. If the future
/// is dropped before it completes, the session stays marked busy: it is rolled back on release.
fn watched<'e, T: Send + 'e>(
    session: &'e mut Session,
    effect: Effect,
    inner: BoxFuture<'e, Result<T, sqlx::Error>>,
) -> BoxFuture<'e, Result<T, sqlx::Error>> {
    Box::pin(async move {
        session.start(effect);
        let result = inner.await;
        session.finish(result.as_ref().err());
        result
    })
}

fn execute<'e, 'q: 'e, E>(
    conn: &'e mut sqlx::sqlite::SqliteConnection,
    session: &'e mut Session,
    query: E,
) -> BoxFuture<'e, Result<SqliteQueryResult, sqlx::Error>>
where
    E: 'q + Execute<'q, Sqlite>,
{
    let (query, effect) = Inspected::new(query);
    watched(session, effect, conn.execute(query))
}

fn fetch_many<'e, 'q: 'e, E>(
    conn: &'e mut sqlx::sqlite::SqliteConnection,
    session: &'e mut Session,
    query: E,
) -> BoxStream<'e, Result<Either<SqliteQueryResult, SqliteRow>, sqlx::Error>>
where
    E: 'q + Execute<'q, Sqlite>,
{
    let (query, effect) = Inspected::new(query);
    Box::pin(Watched {
        inner: conn.fetch_many(query),
        session,
        effect: Some(effect),
        done: false,
    })
}

fn fetch_optional<'e, 'q: 'e, E>(
    conn: &'e mut sqlx::sqlite::SqliteConnection,
    session: &'e mut Session,
    query: E,
) -> BoxFuture<'e, Result<Option<SqliteRow>, sqlx::Error>>
where
    E: 'q + Execute<'q, Sqlite>,
{
    let (query, effect) = Inspected::new(query);
    watched(session, effect, conn.fetch_optional(query))
}

fn prepare_with<'e>(
    conn: &'e mut sqlx::sqlite::SqliteConnection,
    session: &'e mut Session,
    sql: SqlStr,
    parameters: &'e [SqliteTypeInfo],
) -> BoxFuture<'e, Result<SqliteStatement, sqlx::Error>> {
    // Preparing runs nothing; the statement is classified when it is executed.
    watched(
        session,
        Effect::Contained,
        conn.prepare_with(sql, parameters),
    )
}

fn describe<'e>(
    conn: &'e mut sqlx::sqlite::SqliteConnection,
    session: &'e mut Session,
    sql: SqlStr,
) -> BoxFuture<'e, Result<Describe<Sqlite>, sqlx::Error>> {
    watched(session, Effect::Contained, conn.describe(sql))
}

/// The `Executor` methods that reach the connection's worker, for a type with a
/// `parts(&mut self) -> (&mut sqlx::sqlite::SqliteConnection, &mut Session)`; the others
/// (`fetch`, `fetch_all`, `fetch_one`, `execute_many`) are sqlx's defaults on top of these.
macro_rules! watched_executor {
    () => {
        type Database = Sqlite;

        fn execute<'e, 'q: 'e, E>(
            self,
            query: E,
        ) -> BoxFuture<'e, Result<SqliteQueryResult, sqlx::Error>>
        where
            'c: 'e,
            E: 'q + Execute<'q, Sqlite>,
        {
            let (conn, session) = self.parts();
            execute(conn, session, query)
        }

        fn fetch_many<'e, 'q: 'e, E>(
            self,
            query: E,
        ) -> BoxStream<'e, Result<Either<SqliteQueryResult, SqliteRow>, sqlx::Error>>
        where
            'c: 'e,
            E: 'q + Execute<'q, Sqlite>,
        {
            let (conn, session) = self.parts();
            fetch_many(conn, session, query)
        }

        fn fetch_optional<'e, 'q: 'e, E>(
            self,
            query: E,
        ) -> BoxFuture<'e, Result<Option<SqliteRow>, sqlx::Error>>
        where
            'c: 'e,
            E: 'q + Execute<'q, Sqlite>,
        {
            let (conn, session) = self.parts();
            fetch_optional(conn, session, query)
        }

        fn prepare_with<'e>(
            self,
            sql: SqlStr,
            parameters: &'e [SqliteTypeInfo],
        ) -> BoxFuture<'e, Result<SqliteStatement, sqlx::Error>>
        where
            'c: 'e,
        {
            let (conn, session) = self.parts();
            prepare_with(conn, session, sql, parameters)
        }

        fn describe<'e>(self, sql: SqlStr) -> BoxFuture<'e, Result<Describe<Sqlite>, sqlx::Error>>
        where
            'c: 'e,
        {
            let (conn, session) = self.parts();
            describe(conn, session, sql)
        }
    };
}

impl<'c> Executor<'c> for &'c mut SqliteConnection {
    watched_executor!();
}

impl<'c> Executor<'c> for &'c mut SqliteTransaction<'_> {
    watched_executor!();
}
