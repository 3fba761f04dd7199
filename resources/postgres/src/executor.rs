//! sqlx's `Executor` for [`PostgresConnection`] and [`PostgresTransaction`]: every statement is
//! classified before it is sent (does it change the session?) and its outcome recorded (was it
//! cut off, was the error fatal?), then handed to the `PgConnection` underneath.
//!
//! The wrappers add one small allocation per statement and a scan of the SQL text; nothing is
//! sent to the server that the caller did not ask for.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::future::BoxFuture;
use futures_util::stream::{BoxStream, Stream, StreamExt};
use sqlx::error::BoxDynError;
use sqlx::postgres::{PgArguments, PgQueryResult, PgRow, PgStatement, PgTypeInfo};
use sqlx::{Describe, Either, Execute, Executor, PgConnection, Postgres, SqlStr};

use crate::connection::{PostgresConnection, Session};
use crate::sql::{Effect, effect_of};
use crate::transaction::PostgresTransaction;

/// A query taken apart so its SQL can be read before it is handed on: `Execute::sql` consumes
/// the query, so everything else is taken first and handed back unchanged.
struct Inspected {
    sql: SqlStr,
    statement: Option<PgStatement>,
    arguments: Option<Result<Option<PgArguments>, BoxDynError>>,
    persistent: bool,
}

impl Inspected {
    fn new<'q, E: Execute<'q, Postgres>>(mut query: E) -> (Self, Effect) {
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

impl Execute<'_, Postgres> for Inspected {
    fn sql(self) -> SqlStr {
        self.sql
    }

    fn statement(&self) -> Option<&PgStatement> {
        self.statement.as_ref()
    }

    fn take_arguments(&mut self) -> Result<Option<PgArguments>, BoxDynError> {
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
/// is dropped before it completes, the session stays marked busy: it is reset on release.
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
    conn: &'e mut PgConnection,
    session: &'e mut Session,
    query: E,
) -> BoxFuture<'e, Result<PgQueryResult, sqlx::Error>>
where
    E: 'q + Execute<'q, Postgres>,
{
    let (query, effect) = Inspected::new(query);
    watched(session, effect, conn.execute(query))
}

fn fetch_many<'e, 'q: 'e, E>(
    conn: &'e mut PgConnection,
    session: &'e mut Session,
    query: E,
) -> BoxStream<'e, Result<Either<PgQueryResult, PgRow>, sqlx::Error>>
where
    E: 'q + Execute<'q, Postgres>,
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
    conn: &'e mut PgConnection,
    session: &'e mut Session,
    query: E,
) -> BoxFuture<'e, Result<Option<PgRow>, sqlx::Error>>
where
    E: 'q + Execute<'q, Postgres>,
{
    let (query, effect) = Inspected::new(query);
    watched(session, effect, conn.fetch_optional(query))
}

fn prepare_with<'e>(
    conn: &'e mut PgConnection,
    session: &'e mut Session,
    sql: SqlStr,
    parameters: &'e [PgTypeInfo],
) -> BoxFuture<'e, Result<PgStatement, sqlx::Error>> {
    watched(
        session,
        Effect::Contained,
        conn.prepare_with(sql, parameters),
    )
}

fn describe<'e>(
    conn: &'e mut PgConnection,
    session: &'e mut Session,
    sql: SqlStr,
) -> BoxFuture<'e, Result<Describe<Postgres>, sqlx::Error>> {
    watched(session, Effect::Contained, conn.describe(sql))
}

/// The `Executor` methods that reach the server, for a type with a
/// `parts(&mut self) -> (&mut PgConnection, &mut Session)`; the others (`fetch`, `fetch_all`,
/// `fetch_one`, `execute_many`) are sqlx's defaults on top of these.
macro_rules! watched_executor {
    () => {
        type Database = Postgres;

        fn execute<'e, 'q: 'e, E>(
            self,
            query: E,
        ) -> BoxFuture<'e, Result<PgQueryResult, sqlx::Error>>
        where
            'c: 'e,
            E: 'q + Execute<'q, Postgres>,
        {
            let (conn, session) = self.parts();
            execute(conn, session, query)
        }

        fn fetch_many<'e, 'q: 'e, E>(
            self,
            query: E,
        ) -> BoxStream<'e, Result<Either<PgQueryResult, PgRow>, sqlx::Error>>
        where
            'c: 'e,
            E: 'q + Execute<'q, Postgres>,
        {
            let (conn, session) = self.parts();
            fetch_many(conn, session, query)
        }

        fn fetch_optional<'e, 'q: 'e, E>(
            self,
            query: E,
        ) -> BoxFuture<'e, Result<Option<PgRow>, sqlx::Error>>
        where
            'c: 'e,
            E: 'q + Execute<'q, Postgres>,
        {
            let (conn, session) = self.parts();
            fetch_optional(conn, session, query)
        }

        fn prepare_with<'e>(
            self,
            sql: SqlStr,
            parameters: &'e [PgTypeInfo],
        ) -> BoxFuture<'e, Result<PgStatement, sqlx::Error>>
        where
            'c: 'e,
        {
            let (conn, session) = self.parts();
            prepare_with(conn, session, sql, parameters)
        }

        fn describe<'e>(self, sql: SqlStr) -> BoxFuture<'e, Result<Describe<Postgres>, sqlx::Error>>
        where
            'c: 'e,
        {
            let (conn, session) = self.parts();
            describe(conn, session, sql)
        }
    };
}

impl<'c> Executor<'c> for &'c mut PostgresConnection {
    watched_executor!();
}

impl<'c> Executor<'c> for &'c mut PostgresTransaction<'_> {
    watched_executor!();
}
