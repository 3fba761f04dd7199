//! sqlx's `Executor` for watched connections and transactions: every statement is classified
//! before it is sent ([`Driver::effect_of`]) and its outcome recorded in the [`Session`] (was
//! it cut off, was the error fatal?), then handed to the sqlx connection underneath.
//!
//! The functions here are generic over the [`Driver`]; the `Executor` impls themselves must be
//! written in each database crate, for its own types (sqlx's `Executor` is a foreign trait, and
//! an impl for `&mut T` of any `T` would break the orphan rule), so
//! [`impl_watched_executor!`](crate::impl_watched_executor) writes their forwarding methods.
//!
//! The wrappers add one small allocation per statement and a scan of the SQL text; nothing is
//! sent that the caller did not ask for.

use std::pin::Pin;
use std::task::{Context, Poll};

pub use futures_util::future::BoxFuture;
pub use futures_util::stream::BoxStream;
use futures_util::stream::{Stream, StreamExt};
use sqlx::error::BoxDynError;
use sqlx::{Database, Describe, Either, Execute, Executor, SqlStr};

use crate::driver::{Driver, RawConnection};
use crate::session::{Effect, Session};

/// A query taken apart so its SQL can be read before it is handed on: `Execute::sql` consumes
/// the query, so everything else is taken first and handed back unchanged.
struct Inspected<DB: Database> {
    sql: SqlStr,
    statement: Option<DB::Statement>,
    arguments: Option<Result<Option<DB::Arguments>, BoxDynError>>,
    persistent: bool,
}

impl<DB: Database> Inspected<DB> {
    fn new<'q, D, E>(mut query: E) -> (Self, Effect)
    where
        D: Driver<Database = DB>,
        E: Execute<'q, DB>,
    {
        let statement = query.statement().cloned();
        let arguments = query.take_arguments();
        let persistent = query.persistent();
        let sql = query.sql();
        let effect = D::effect_of(sql.as_str());
        let inspected = Self {
            sql,
            statement,
            arguments: Some(arguments),
            persistent,
        };
        (inspected, effect)
    }
}

impl<DB: Database> Execute<'_, DB> for Inspected<DB> {
    fn sql(self) -> SqlStr {
        self.sql
    }

    fn statement(&self) -> Option<&DB::Statement> {
        self.statement.as_ref()
    }

    fn take_arguments(&mut self) -> Result<Option<DB::Arguments>, BoxDynError> {
        self.arguments.take().unwrap_or(Ok(None))
    }

    fn persistent(&self) -> bool {
        self.persistent
    }
}

/// A result stream whose start, end and errors are recorded in the session.
struct Watched<'e, D, S> {
    inner: S,
    session: &'e mut Session<D>,
    /// The effect to record on the first poll (the statement is only sent then).
    effect: Option<Effect>,
    done: bool,
}

impl<D, T, S> Stream for Watched<'_, D, S>
where
    D: Driver,
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
/// is dropped before it completes, the session stays marked busy: it is rolled back (or reset)
/// on release.
fn watched<'e, D: Driver, T: Send + 'e>(
    session: &'e mut Session<D>,
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

/// `Executor::execute`, watched.
pub fn execute<'e, 'q: 'e, D, E>(
    conn: &'e mut RawConnection<D>,
    session: &'e mut Session<D>,
    query: E,
) -> BoxFuture<'e, Result<<D::Database as Database>::QueryResult, sqlx::Error>>
where
    D: Driver,
    for<'c> &'c mut RawConnection<D>: Executor<'c, Database = D::Database>,
    E: 'q + Execute<'q, D::Database>,
{
    let (query, effect) = Inspected::new::<D, E>(query);
    watched(session, effect, conn.execute(query))
}

/// An item of a `fetch_many` stream: a statement's result, or one of its rows.
type ResultOrRow<DB> = Either<<DB as Database>::QueryResult, <DB as Database>::Row>;

/// `Executor::fetch_many`, watched.
pub fn fetch_many<'e, 'q: 'e, D, E>(
    conn: &'e mut RawConnection<D>,
    session: &'e mut Session<D>,
    query: E,
) -> BoxStream<'e, Result<ResultOrRow<D::Database>, sqlx::Error>>
where
    D: Driver,
    for<'c> &'c mut RawConnection<D>: Executor<'c, Database = D::Database>,
    E: 'q + Execute<'q, D::Database>,
{
    let (query, effect) = Inspected::new::<D, E>(query);
    Box::pin(Watched {
        inner: conn.fetch_many(query),
        session,
        effect: Some(effect),
        done: false,
    })
}

/// `Executor::fetch_optional`, watched.
pub fn fetch_optional<'e, 'q: 'e, D, E>(
    conn: &'e mut RawConnection<D>,
    session: &'e mut Session<D>,
    query: E,
) -> BoxFuture<'e, Result<Option<<D::Database as Database>::Row>, sqlx::Error>>
where
    D: Driver,
    for<'c> &'c mut RawConnection<D>: Executor<'c, Database = D::Database>,
    E: 'q + Execute<'q, D::Database>,
{
    let (query, effect) = Inspected::new::<D, E>(query);
    watched(session, effect, conn.fetch_optional(query))
}

/// `Executor::prepare_with`, watched.
pub fn prepare_with<'e, D>(
    conn: &'e mut RawConnection<D>,
    session: &'e mut Session<D>,
    sql: SqlStr,
    parameters: &'e [<D::Database as Database>::TypeInfo],
) -> BoxFuture<'e, Result<<D::Database as Database>::Statement, sqlx::Error>>
where
    D: Driver,
    for<'c> &'c mut RawConnection<D>: Executor<'c, Database = D::Database>,
{
    // Preparing runs nothing; the statement is classified when it is executed.
    watched(
        session,
        Effect::Contained,
        conn.prepare_with(sql, parameters),
    )
}

/// `Executor::describe`, watched.
pub fn describe<'e, D>(
    conn: &'e mut RawConnection<D>,
    session: &'e mut Session<D>,
    sql: SqlStr,
) -> BoxFuture<'e, Result<Describe<D::Database>, sqlx::Error>>
where
    D: Driver,
    for<'c> &'c mut RawConnection<D>: Executor<'c, Database = D::Database>,
{
    watched(session, Effect::Contained, conn.describe(sql))
}

/// Implements sqlx's `Executor<'c>` for `&'c mut $type`, a type with an inherent
/// `parts(&mut self) -> (&mut RawConnection<D>, &mut Session<D>)`, on the database `$database`:
/// the methods that reach the database go through the watched functions of this module; the
/// others (`fetch`, `fetch_all`, `fetch_one`, `execute_many`) are sqlx's defaults on top of
/// them.
///
/// A macro, not a generic impl: the impl must stand in the crate that owns `$type` (sqlx's
/// trait is foreign to both crates), and only the forwarding is written here.
#[macro_export]
macro_rules! impl_watched_executor {
    ($type:ty, $database:ty) => {
        impl<'c> ::sqlx::Executor<'c> for &'c mut $type {
            type Database = $database;

            fn execute<'e, 'q: 'e, E>(
                self,
                query: E,
            ) -> $crate::executor::BoxFuture<
                'e,
                Result<<$database as ::sqlx::Database>::QueryResult, ::sqlx::Error>,
            >
            where
                'c: 'e,
                E: 'q + ::sqlx::Execute<'q, $database>,
            {
                let (conn, session) = self.parts();
                $crate::executor::execute(conn, session, query)
            }

            fn fetch_many<'e, 'q: 'e, E>(
                self,
                query: E,
            ) -> $crate::executor::BoxStream<
                'e,
                Result<
                    ::sqlx::Either<
                        <$database as ::sqlx::Database>::QueryResult,
                        <$database as ::sqlx::Database>::Row,
                    >,
                    ::sqlx::Error,
                >,
            >
            where
                'c: 'e,
                E: 'q + ::sqlx::Execute<'q, $database>,
            {
                let (conn, session) = self.parts();
                $crate::executor::fetch_many(conn, session, query)
            }

            fn fetch_optional<'e, 'q: 'e, E>(
                self,
                query: E,
            ) -> $crate::executor::BoxFuture<
                'e,
                Result<Option<<$database as ::sqlx::Database>::Row>, ::sqlx::Error>,
            >
            where
                'c: 'e,
                E: 'q + ::sqlx::Execute<'q, $database>,
            {
                let (conn, session) = self.parts();
                $crate::executor::fetch_optional(conn, session, query)
            }

            fn prepare_with<'e>(
                self,
                sql: ::sqlx::SqlStr,
                parameters: &'e [<$database as ::sqlx::Database>::TypeInfo],
            ) -> $crate::executor::BoxFuture<
                'e,
                Result<<$database as ::sqlx::Database>::Statement, ::sqlx::Error>,
            >
            where
                'c: 'e,
            {
                let (conn, session) = self.parts();
                $crate::executor::prepare_with(conn, session, sql, parameters)
            }

            fn describe<'e>(
                self,
                sql: ::sqlx::SqlStr,
            ) -> $crate::executor::BoxFuture<'e, Result<::sqlx::Describe<$database>, ::sqlx::Error>>
            where
                'c: 'e,
            {
                let (conn, session) = self.parts();
                $crate::executor::describe(conn, session, sql)
            }
        }
    };
}
