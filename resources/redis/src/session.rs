//! What a dedicated connection's user left behind: the session state its commands changed, so
//! that `recycle` resets only what needs resetting (no round trip for a clean connection) and
//! `is_broken` retires what cannot be reset.

use redis::{Arg, Cmd, Pipeline, RedisError};

/// How one command changes the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Effect {
    /// Nothing that outlives the command.
    None,
    /// `WATCH`: keys watched until `EXEC`, `DISCARD` or `UNWATCH`.
    Watch,
    /// `UNWATCH`.
    Unwatch,
    /// `MULTI`: commands are queued until `EXEC` or `DISCARD`.
    Multi,
    /// `EXEC` or `DISCARD`: the transaction ends and every key is unwatched, even when the
    /// server answers with an error (`EXECABORT`, `... without MULTI`).
    EndTransaction,
    /// `SUBSCRIBE` and kin: the connection is in pub/sub mode.
    Subscribe,
    /// A change no cheap command undoes for the next user: another database (`SELECT`), another
    /// user or protocol (`AUTH`, `HELLO`, `RESET`), replies turned off or redirected (`CLIENT
    /// REPLY`, `CLIENT TRACKING`), `MONITOR`.
    Alter,
}

impl Effect {
    fn of(cmd: &Cmd) -> Self {
        let mut args = words(cmd);
        let Some(name) = args.next() else {
            return Self::None;
        };
        let is = |candidate: &str| name.eq_ignore_ascii_case(candidate.as_bytes());
        if is("WATCH") {
            Self::Watch
        } else if is("UNWATCH") {
            Self::Unwatch
        } else if is("MULTI") {
            Self::Multi
        } else if is("EXEC") || is("DISCARD") {
            Self::EndTransaction
        } else if ["SUBSCRIBE", "PSUBSCRIBE", "SSUBSCRIBE"]
            .into_iter()
            .any(is)
        {
            Self::Subscribe
        } else if [
            "SELECT",
            "AUTH",
            "HELLO",
            "RESET",
            "MONITOR",
            "READONLY",
            "READWRITE",
        ]
        .into_iter()
        .any(is)
        {
            Self::Alter
        } else if is("CLIENT") {
            let sub = args.next().unwrap_or_default();
            let alters = [
                "SETNAME", "REPLY", "TRACKING", "CACHING", "NO-EVICT", "NO-TOUCH", "SETINFO",
            ]
            .into_iter()
            .any(|candidate| sub.eq_ignore_ascii_case(candidate.as_bytes()));
            if alters { Self::Alter } else { Self::None }
        } else {
            Self::None
        }
    }
}

/// The arguments of `cmd` (its name first), without `SCAN` cursors.
fn words(cmd: &Cmd) -> impl Iterator<Item = &[u8]> {
    cmd.args_iter().filter_map(|arg| {
        if let Arg::Simple(bytes) = arg {
            Some(bytes)
        } else {
            None
        }
    })
}

/// Whether `cmd` may block the connection server-side for longer than a reply normally takes,
/// bounded by its own timeout argument rather than the response timeout.
pub(crate) fn is_blocking(cmd: &Cmd) -> bool {
    let mut args = words(cmd);
    let Some(name) = args.next() else {
        return false;
    };
    let is = |candidate: &str| name.eq_ignore_ascii_case(candidate.as_bytes());
    const BLOCKING: [&str; 10] = [
        "BLPOP",
        "BRPOP",
        "BRPOPLPUSH",
        "BLMOVE",
        "BLMPOP",
        "BZPOPMIN",
        "BZPOPMAX",
        "BZMPOP",
        "WAIT",
        "WAITAOF",
    ];
    if BLOCKING.into_iter().any(is) {
        return true;
    }
    (is("XREAD") || is("XREADGROUP")) && args.any(|arg| arg.eq_ignore_ascii_case(b"BLOCK"))
}

/// Whether any command of `pipeline` is blocking.
pub(crate) fn pipeline_is_blocking(pipeline: &Pipeline) -> bool {
    pipeline.cmd_iter().any(is_blocking)
}

/// The session state of one dedicated connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Session {
    /// Keys may be watched.
    pub(crate) watching: bool,
    /// A `MULTI` may be open.
    pub(crate) in_multi: bool,
    /// The connection entered pub/sub mode.
    pub(crate) subscribed: bool,
    /// A command changed state that cannot be reset cheaply.
    pub(crate) altered: bool,
    /// A command was sent and its reply not yet read: its future was dropped (a cancelled
    /// `BLPOP` still blocks the connection server-side), or it is still running.
    pub(crate) in_flight: bool,
    /// An I/O, protocol or timeout error: the stream may be out of step with the server.
    pub(crate) failed: bool,
}

impl Session {
    /// A command (or pipeline) is about to be sent.
    pub(crate) fn begin(&mut self) {
        self.in_flight = true;
    }

    /// The reply to `cmd` arrived (or the attempt failed).
    pub(crate) fn settle_command<T>(&mut self, cmd: &Cmd, result: &Result<T, RedisError>) {
        self.settle(std::iter::once(Effect::of(cmd)), result);
    }

    /// The replies to `pipeline` arrived (or the attempt failed).
    pub(crate) fn settle_pipeline<T>(
        &mut self,
        pipeline: &Pipeline,
        result: &Result<T, RedisError>,
    ) {
        let body = pipeline.cmd_iter().map(Effect::of);
        if pipeline.is_transaction() {
            let effects = std::iter::once(Effect::Multi)
                .chain(body)
                .chain(std::iter::once(Effect::EndTransaction));
            self.settle(effects, result);
        } else {
            self.settle(body, result);
        }
    }

    fn settle<T>(&mut self, effects: impl Iterator<Item = Effect>, result: &Result<T, RedisError>) {
        self.in_flight = false;
        match result {
            Ok(_) => {
                for effect in effects {
                    self.apply(effect);
                }
            }
            Err(err) if is_fatal(err) => self.failed = true,
            Err(_) => {
                // A server error. A pipeline may have run some of its commands before the
                // failing one, so assume the worst of each: keys may be watched, a `MULTI` may be
                // open. A failed `EXEC`/`DISCARD` leaves no `MULTI` open (`EXECABORT` discarded
                // it, or there was none), but only the first unwatches, so `watching` stays.
                for effect in effects {
                    match effect {
                        Effect::Watch => self.watching = true,
                        Effect::Multi => self.in_multi = true,
                        Effect::EndTransaction => self.in_multi = false,
                        Effect::None | Effect::Unwatch => {}
                        Effect::Subscribe | Effect::Alter => self.apply(effect),
                    }
                }
            }
        }
    }

    fn apply(&mut self, effect: Effect) {
        match effect {
            Effect::None => {}
            Effect::Watch => self.watching = true,
            Effect::Unwatch => self.watching = false,
            Effect::Multi => self.in_multi = true,
            Effect::EndTransaction => {
                self.in_multi = false;
                self.watching = false;
            }
            Effect::Subscribe => self.subscribed = true,
            Effect::Alter => self.altered = true,
        }
    }

    /// Whether the connection must be destroyed rather than reset.
    pub(crate) fn is_unusable(&self) -> bool {
        self.subscribed || self.altered || self.in_flight || self.failed
    }

    /// Whether `recycle` has work to do.
    pub(crate) fn needs_reset(&self) -> bool {
        self.watching || self.in_multi
    }
}

/// Whether `err` leaves the connection out of step with the server: an I/O failure or timeout
/// (a reply may still come), or a protocol error.
pub(crate) fn is_fatal(err: &RedisError) -> bool {
    err.is_io_error() || err.is_unrecoverable_error() || err.is_timeout()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server_error() -> RedisError {
        RedisError::from((redis::ErrorKind::Client, "WRONGTYPE"))
    }

    fn io_error() -> RedisError {
        RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionReset))
    }

    #[test]
    fn watch_multi_exec_and_unwatch_are_tracked() {
        let mut session = Session::default();
        session.settle_command(redis::cmd("watch").arg("k"), &Ok(()));
        assert!(session.watching && session.needs_reset());
        session.settle_command(&redis::cmd("UNWATCH"), &Ok(()));
        assert!(!session.needs_reset());

        session.settle_command(redis::cmd("WATCH").arg("k"), &Ok(()));
        session.settle_command(&redis::cmd("MULTI"), &Ok(()));
        assert!(session.in_multi);
        session.settle_command(&redis::cmd("EXEC"), &Ok(()));
        assert_eq!(session, Session::default());

        session.settle_command(redis::cmd("WATCH").arg("k"), &Ok(()));
        session.settle_command(&redis::cmd("MULTI"), &Ok(()));
        session.settle_command::<()>(&redis::cmd("EXEC"), &Err(server_error()));
        assert!(
            !session.in_multi && session.watching,
            "UNWATCH is still due"
        );
    }

    #[test]
    fn a_failed_pipeline_assumes_the_worst() {
        let mut session = Session::default();

        let mut pipeline = redis::pipe();
        pipeline
            .cmd("WATCH")
            .arg("k")
            .cmd("GET")
            .arg("k")
            .cmd("MULTI");
        session.settle_pipeline::<()>(&pipeline, &Err(server_error()));
        assert!(session.watching && session.in_multi);
    }

    #[test]
    fn an_atomic_pipeline_leaves_nothing_open() {
        let mut session = Session::default();
        session.settle_command(redis::cmd("WATCH").arg("k"), &Ok(()));
        let mut pipeline = redis::pipe();
        pipeline.atomic().cmd("SET").arg("k").arg(1);
        session.settle_pipeline(&pipeline, &Ok(()));
        assert_eq!(session, Session::default());
    }

    #[test]
    fn subscriptions_alterations_cancellations_and_io_errors_make_it_unusable() {
        for cmd in [
            redis::cmd("SUBSCRIBE").arg("c").clone(),
            redis::cmd("psubscribe").arg("c*").clone(),
            redis::cmd("SELECT").arg(3).clone(),
            redis::cmd("CLIENT").arg("reply").arg("OFF").clone(),
            redis::cmd("CLIENT").arg("SETNAME").arg("x").clone(),
            redis::cmd("MONITOR"),
        ] {
            let mut session = Session::default();
            session.settle_command(&cmd, &Ok(()));
            assert!(session.is_unusable(), "{:?}", cmd.get_packed_command());
        }
        let mut session = Session::default();
        session.settle_command(redis::cmd("CLIENT").arg("ID"), &Ok(()));
        assert!(!session.is_unusable());

        session.begin();
        assert!(session.is_unusable(), "a reply still owed");
        session.settle_command::<()>(redis::cmd("GET").arg("k"), &Err(io_error()));
        assert!(session.failed && session.is_unusable());
    }

    #[test]
    fn blocking_commands_are_recognised() {
        assert!(is_blocking(redis::cmd("blpop").arg("k").arg(0)));
        assert!(is_blocking(redis::cmd("WAIT").arg(1).arg(0)));
        assert!(is_blocking(
            redis::cmd("XREAD")
                .arg("BLOCK")
                .arg(0)
                .arg("STREAMS")
                .arg("s")
                .arg("$")
        ));
        assert!(!is_blocking(
            redis::cmd("XREAD").arg("STREAMS").arg("s").arg("0")
        ));
        assert!(!is_blocking(redis::cmd("LPOP").arg("k")));
        let mut pipeline = redis::pipe();
        pipeline
            .cmd("SET")
            .arg("a")
            .arg(1)
            .cmd("BRPOP")
            .arg("q")
            .arg(1);
        assert!(pipeline_is_blocking(&pipeline));
    }
}
