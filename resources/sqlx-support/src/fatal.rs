//! The driver errors that are fatal whatever the server database: the byte stream to the
//! server is lost or out of step. Each database crate adds the server errors of its own.

/// Whether `err` is an I/O, TLS or protocol error, or a crashed driver worker: the connection
/// to the server is lost (a restart, a network failure, a killed session) or out of step.
pub fn is_connection_lost(err: &sqlx::Error) -> bool {
    matches!(
        err,
        sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::WorkerCrashed
    )
}

#[cfg(test)]
mod tests {
    use super::is_connection_lost;

    #[test]
    fn transport_errors_lose_the_connection() {
        let io = |kind| sqlx::Error::Io(std::io::Error::new(kind, "transport"));
        assert!(is_connection_lost(&io(std::io::ErrorKind::UnexpectedEof)));
        assert!(is_connection_lost(&io(std::io::ErrorKind::ConnectionReset)));
        assert!(is_connection_lost(&io(std::io::ErrorKind::BrokenPipe)));
        assert!(is_connection_lost(&sqlx::Error::Tls(
            "handshake failed".into()
        )));
        assert!(is_connection_lost(&sqlx::Error::Protocol(
            "packets out of order".to_owned()
        )));
        assert!(is_connection_lost(&sqlx::Error::WorkerCrashed));
    }

    #[test]
    fn client_side_errors_do_not() {
        assert!(!is_connection_lost(&sqlx::Error::RowNotFound));
        assert!(!is_connection_lost(&sqlx::Error::ColumnNotFound(
            "id".to_owned()
        )));
        assert!(!is_connection_lost(&sqlx::Error::Decode(
            "bad utf-8".into()
        )));
        assert!(!is_connection_lost(&sqlx::Error::Encode("too long".into())));
        assert!(!is_connection_lost(&sqlx::Error::PoolTimedOut));
        assert!(!is_connection_lost(&sqlx::Error::BeginFailed));
    }
}
