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
//!
//! # Fair scheduling
//!
//! sqlx does a connection's I/O inside the caller's task. When the server answers before the
//! driver first reads the socket (a server on the same host, scheduled while the client's
//! thread was inside its write call), a statement completes without its task ever waiting,
//! and a task that runs statements in a loop keeps its worker thread until tokio's cooperative
//! budget runs out: about forty statements, a millisecond or more during which every other
//! task queued on that worker waits. So a statement that completed without waiting yields to
//! the scheduler once ([`tokio::task::yield_now`]) before its result is handed over, as a
//! driver with a connection task (tokio-postgres) does by construction. A statement that
//! waited for the server, the usual case with a remote one, costs nothing more; one that did
//! not pays about a microsecond. Measured with `cargo bench -p nebula-resource-benches --bench
//! postgres` (16 tasks, a pool of 16, the server on the same 2 cores): without the yield the
//! 99th percentile was 4.1–4.7 ms against 22 µs at the median; with it, 0.84–0.95 ms.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

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

/// A result stream whose start, end and errors are recorded in the session, and which yields
/// once at its end if it never waited (see [Fair scheduling](self#fair-scheduling)).
struct Watched<'e, D, S> {
    inner: S,
    session: &'e mut Session<D>,
    /// The effect to record on the first poll (the statement is only sent then).
    effect: Option<Effect>,
    /// Whether `inner` ever returned `Pending`.
    waited: bool,
    /// The yield under way before the end is reported, for a stream that never waited.
    yielding: Option<BoxFuture<'static, ()>>,
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
        if let Some(yielding) = &mut this.yielding {
            ready!(yielding.as_mut().poll(cx));
            this.yielding = None;
            return Poll::Ready(None);
        }
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
                if !this.waited {
                    let mut yielding: BoxFuture<'static, ()> = Box::pin(tokio::task::yield_now());
                    if yielding.as_mut().poll(cx).is_pending() {
                        this.yielding = Some(yielding);
                        return Poll::Pending;
                    }
                }
            }
            // sqlx ends a result stream at its first error.
            Poll::Ready(Some(Err(err))) => {
                this.session.finish(Some(err));
                this.done = true;
            }
            Poll::Ready(Some(Ok(_))) => {}
            Poll::Pending => this.waited = true,
        }
        polled
    }
}

/// Run `inner` recording its start (with `effect`) and its outcome in `session`, yielding once
/// after it if it never waited (see [Fair scheduling](self#fair-scheduling)). If the future is
/// dropped before `inner` completes, the session stays marked busy: it is rolled back (or
/// reset) on release. Dropped during the yield, the statement has run and its outcome is
/// recorded; only the result is lost, as with a cancellation just after the server answered.
fn watched<'e, D: Driver, T: Send + 'e>(
    session: &'e mut Session<D>,
    effect: Effect,
    mut inner: BoxFuture<'e, Result<T, sqlx::Error>>,
) -> BoxFuture<'e, Result<T, sqlx::Error>> {
    Box::pin(async move {
        session.start(effect);
        let mut waited = false;
        let result = std::future::poll_fn(|cx| {
            let polled = inner.as_mut().poll(cx);
            waited |= polled.is_pending();
            polled
        })
        .await;
        session.finish(result.as_ref().err());
        if !waited {
            tokio::task::yield_now().await;
        }
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
        waited: false,
        yielding: None,
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Context, Poll, Waker};

    use futures_util::stream::{self, StreamExt};

    use super::{BoxFuture, Watched, watched};
    use crate::session::tests::Test;
    use crate::session::{Effect, Session};

    /// A task that counts its turns on the worker, yielding after each.
    fn spawn_ticker() -> (Arc<AtomicUsize>, tokio::task::JoinHandle<()>) {
        let turns = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&turns);
        let ticker = tokio::spawn(async move {
            loop {
                counted.fetch_add(1, Ordering::Relaxed);
                tokio::task::yield_now().await;
            }
        });
        (turns, ticker)
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_statement_that_never_waited_lets_the_other_tasks_run() {
        let (turns, ticker) = spawn_ticker();
        let mut session = Session::<Test>::default();
        let mut between = Vec::new();
        for _ in 0..8 {
            let before = turns.load(Ordering::Relaxed);
            let ready: BoxFuture<'_, Result<u32, sqlx::Error>> = Box::pin(async { Ok(7) });
            let result = watched(&mut session, Effect::Contained, ready).await;
            assert_eq!(result.expect("a ready statement"), 7);
            between.push(turns.load(Ordering::Relaxed) - before);
        }
        ticker.abort();
        assert!(
            between.iter().all(|&n| n >= 1),
            "the other task must get a turn after every statement: {between:?}"
        );
        assert!(!session.busy, "the statement's outcome is recorded");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_result_stream_that_never_waited_lets_the_other_tasks_run() {
        let (turns, ticker) = spawn_ticker();
        let mut session = Session::<Test>::default();
        let mut between = Vec::new();
        for _ in 0..8 {
            let before = turns.load(Ordering::Relaxed);
            let rows: Vec<u32> = Watched {
                inner: stream::iter([Ok::<u32, sqlx::Error>(1), Ok(2)]),
                session: &mut session,
                effect: Some(Effect::Contained),
                waited: false,
                yielding: None,
                done: false,
            }
            .map(|row| row.expect("a row"))
            .collect()
            .await;
            assert_eq!(rows, [1, 2]);
            between.push(turns.load(Ordering::Relaxed) - before);
        }
        ticker.abort();
        assert!(
            between.iter().all(|&n| n >= 1),
            "the other task must get a turn after every result stream: {between:?}"
        );
    }

    #[test]
    fn a_statement_that_waited_does_not_yield_again() {
        let polls = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&polls);
        let mut pending_once = true;
        let inner: BoxFuture<'_, Result<u32, sqlx::Error>> =
            Box::pin(std::future::poll_fn(move |cx: &mut Context<'_>| {
                counted.fetch_add(1, Ordering::Relaxed);
                if std::mem::take(&mut pending_once) {
                    cx.waker().wake_by_ref();
                    Poll::Pending
                } else {
                    Poll::Ready(Ok(3))
                }
            }));
        let mut session = Session::<Test>::default();
        let mut outer = watched(&mut session, Effect::Contained, inner);
        let mut cx = Context::from_waker(Waker::noop());
        assert!(outer.as_mut().poll(&mut cx).is_pending());
        match outer.as_mut().poll(&mut cx) {
            Poll::Ready(result) => assert_eq!(result.expect("the statement's result"), 3),
            Poll::Pending => panic!("a statement that waited must not yield once more"),
        }
        assert_eq!(polls.load(Ordering::Relaxed), 2);
    }
}
