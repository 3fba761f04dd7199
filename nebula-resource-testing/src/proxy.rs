//! [`FaultProxy`]: a TCP proxy on loopback that a test puts between a client and its server,
//! then turns into a slow link, a link that resets, a black hole or a dead server, and heals.
//!
//! Written here rather than taken from a crate: toxiproxy needs its own server process (none is
//! installable from the registries this project builds from), and the Rust proxy crates found
//! forward only. This one is small: one accept task, one task per connection, the mode in a
//! `watch` channel every task follows.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How long a new connection may take to reach the upstream server before it is reset.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The size of one forwarded chunk.
const CHUNK: usize = 16 * 1024;

/// What the proxy does with traffic now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Forward as it comes.
    Pass,
    /// Forward each chunk after this delay.
    Latency(Duration),
    /// Forward nothing, either way, on open and new connections alike; what was sent waits, as
    /// on a cut network path, and flows again on heal.
    Blackhole,
    /// Reset every open connection and every new one, as a server that is down does.
    Refuse,
}

/// A TCP proxy on `127.0.0.1`, in front of one upstream server, whose behaviour a test
/// switches at any time.
///
/// Connect the client under test to [`local_addr`](Self::local_addr) instead of the server.
/// Every switch applies at once to open connections and to new ones. Dropping the proxy stops
/// it and resets every connection through it.
///
/// ```no_run
/// # async fn demo() -> std::io::Result<()> {
/// use std::time::Duration;
/// use nebula_resource_testing::FaultProxy;
///
/// let proxy = FaultProxy::start("127.0.0.1:5432".parse().unwrap()).await?;
/// let url = format!("postgres://postgres@127.0.0.1:{}/test", proxy.port());
/// // … build the manager with `url`, acquire, work …
/// proxy.reset(); // every open connection gets a TCP reset
/// proxy.blackhole(); // nothing gets through, nothing fails either: only timeouts help
/// proxy.pass(); // healed
/// # let _ = (url, Duration::ZERO);
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct FaultProxy {
    local: SocketAddr,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
}

#[derive(Debug)]
struct Shared {
    upstream: SocketAddr,
    mode: watch::Sender<Mode>,
    /// Bumped to reset every open connection.
    resets: watch::Sender<u64>,
    open: AtomicUsize,
}

impl FaultProxy {
    /// Listen on `127.0.0.1` on a free port and forward to `upstream`.
    ///
    /// # Errors
    ///
    /// `upstream` is not a loopback address (tests stay on this machine), or the listener
    /// cannot be bound.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropped before it finishes, nothing is left listening.
    pub async fn start(upstream: SocketAddr) -> io::Result<Self> {
        if !upstream.ip().is_loopback() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("the fault proxy forwards to loopback addresses only, not {upstream}"),
            ));
        }
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let local = listener.local_addr()?;
        let shared = Arc::new(Shared {
            upstream,
            mode: watch::Sender::new(Mode::Pass),
            resets: watch::Sender::new(0),
            open: AtomicUsize::new(0),
        });
        let accept = tokio::spawn(accept_loop(listener, Arc::clone(&shared)));
        Ok(Self {
            local,
            shared,
            accept,
        })
    }

    /// Where clients connect: `127.0.0.1:<port>`.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The port clients connect to.
    pub fn port(&self) -> u16 {
        self.local.port()
    }

    /// The server behind the proxy.
    pub fn upstream(&self) -> SocketAddr {
        self.shared.upstream
    }

    /// Heal: forward everything as it comes, accept new connections. What a blackhole held
    /// back flows on.
    pub fn pass(&self) {
        self.shared.mode.send_replace(Mode::Pass);
    }

    /// Forward every chunk, either way, after `delay`.
    pub fn latency(&self, delay: Duration) {
        self.shared.mode.send_replace(Mode::Latency(delay));
    }

    /// Reset (TCP RST) every open connection now. New connections are not affected: a server
    /// that killed its clients' connections and is still up.
    pub fn reset(&self) {
        self.shared.resets.send_modify(|n| *n += 1);
    }

    /// Forward nothing, either way, on open and new connections, and fail nothing: a cut
    /// network path, where only the client's own timeouts help. New connections are accepted
    /// and wait. [`pass`](Self::pass) lets the held traffic through.
    pub fn blackhole(&self) {
        self.shared.mode.send_replace(Mode::Blackhole);
    }

    /// Reset every open connection and every new one: the server is down.
    pub fn refuse(&self) {
        self.shared.mode.send_replace(Mode::Refuse);
    }

    /// How many client connections are open through the proxy.
    pub fn open_connections(&self) -> usize {
        self.shared.open.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept.abort();
        // Every connection task resets its sockets when it sees this.
        self.shared.mode.send_replace(Mode::Refuse);
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        let _ = client.set_nodelay(true);
        if *shared.mode.borrow() == Mode::Refuse {
            reset(&client);
            continue;
        }
        tokio::spawn(serve(client, Arc::clone(&shared)));
    }
}

/// Close `stream` with a TCP reset rather than a FIN.
fn reset(stream: &TcpStream) {
    let _ = stream.set_zero_linger();
}

/// Counts a connection open for as long as it lives.
struct Open<'a>(&'a AtomicUsize);

impl Drop for Open<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// One client connection: reach the upstream (once traffic may flow), then forward both ways
/// until either side closes, a reset, or `Refuse`.
async fn serve(mut client: TcpStream, shared: Arc<Shared>) {
    shared.open.fetch_add(1, Ordering::SeqCst);
    let _open = Open(&shared.open);
    let mut resets = shared.resets.subscribe();
    resets.mark_unchanged();
    let mut mode = shared.mode.subscribe();
    let upstream = tokio::select! {
        biased;
        _ = resets.changed() => None,
        flowing = wait_flowing(&mut mode) => if flowing {
            tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(shared.upstream))
                .await
                .ok()
                .and_then(Result::ok)
        } else {
            None
        },
    };
    let Some(mut upstream) = upstream else {
        reset(&client);
        return;
    };
    let _ = upstream.set_nodelay(true);
    let ended_by_fault = {
        let (client_read, client_write) = client.split();
        let (upstream_read, upstream_write) = upstream.split();
        tokio::select! {
            biased;
            _ = resets.changed() => true,
            refused = until_refused(shared.mode.subscribe()) => refused,
            () = pump(client_read, upstream_write, shared.mode.subscribe()) => false,
            () = pump(upstream_read, client_write, shared.mode.subscribe()) => false,
        }
    };
    if ended_by_fault {
        reset(&client);
        reset(&upstream);
    }
}

/// Wait until traffic may flow (`Pass` or `Latency`): `true`, or `false` on `Refuse`.
async fn wait_flowing(mode: &mut watch::Receiver<Mode>) -> bool {
    loop {
        match *mode.borrow_and_update() {
            Mode::Pass | Mode::Latency(_) => return true,
            Mode::Refuse => return false,
            Mode::Blackhole => {}
        }
        if mode.changed().await.is_err() {
            return false;
        }
    }
}

/// Resolves (`true`) once the mode is `Refuse`.
async fn until_refused(mut mode: watch::Receiver<Mode>) -> bool {
    mode.wait_for(|mode| *mode == Mode::Refuse).await.is_ok()
}

/// Forward one direction until the reader closes or either side fails. Reads nothing while
/// blackholed, so the sender's data waits in the kernel's buffers, as on a cut path.
async fn pump(
    mut from: tokio::net::tcp::ReadHalf<'_>,
    mut to: tokio::net::tcp::WriteHalf<'_>,
    mut mode: watch::Receiver<Mode>,
) {
    let mut buf = vec![0_u8; CHUNK];
    loop {
        if !wait_flowing(&mut mode).await {
            return;
        }
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        // A chunk read just before a switch follows the new mode.
        if !wait_flowing(&mut mode).await {
            return;
        }
        let delay = match *mode.borrow() {
            Mode::Latency(delay) => Some(delay),
            _ => None,
        };
        if let Some(delay) = delay {
            tokio::time::sleep(delay).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo server on loopback.
    async fn echo() -> SocketAddr {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut stream, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut buf = [0_u8; 1024];
                    loop {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => {
                                if stream.write_all(&buf[..n]).await.is_err() {
                                    return;
                                }
                            }
                        }
                    }
                });
            }
        });
        addr
    }

    async fn round_trip(stream: &mut TcpStream, within: Duration) -> io::Result<()> {
        tokio::time::timeout(within, async {
            stream.write_all(b"ping").await?;
            let mut reply = [0_u8; 4];
            stream.read_exact(&mut reply).await?;
            assert_eq!(&reply, b"ping");
            Ok(())
        })
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no reply"))?
    }

    const QUICK: Duration = Duration::from_secs(2);

    #[tokio::test]
    async fn passes_then_resets_then_passes_again() {
        let proxy = FaultProxy::start(echo().await).await.unwrap();
        let mut stream = TcpStream::connect(proxy.local_addr()).await.unwrap();
        round_trip(&mut stream, QUICK).await.unwrap();
        assert_eq!(proxy.open_connections(), 1);

        proxy.reset();
        let err = round_trip(&mut stream, QUICK).await.unwrap_err();
        assert!(
            matches!(
                err.kind(),
                io::ErrorKind::ConnectionReset
                    | io::ErrorKind::BrokenPipe
                    | io::ErrorKind::UnexpectedEof
            ),
            "{err:?}"
        );
        let mut fresh = TcpStream::connect(proxy.local_addr()).await.unwrap();
        round_trip(&mut fresh, QUICK).await.unwrap();
    }

    #[tokio::test]
    async fn a_blackhole_holds_traffic_until_healed() {
        let proxy = FaultProxy::start(echo().await).await.unwrap();
        let mut open = TcpStream::connect(proxy.local_addr()).await.unwrap();
        round_trip(&mut open, QUICK).await.unwrap();
        proxy.blackhole();
        let held = round_trip(&mut open, Duration::from_millis(300)).await;
        assert_eq!(held.unwrap_err().kind(), io::ErrorKind::TimedOut);
        let mut new = TcpStream::connect(proxy.local_addr()).await.unwrap();
        let held = round_trip(&mut new, Duration::from_millis(300)).await;
        assert_eq!(held.unwrap_err().kind(), io::ErrorKind::TimedOut);

        proxy.pass();
        // What was held flows on: the replies to the timed-out pings arrive first.
        let mut reply = [0_u8; 4];
        tokio::time::timeout(QUICK, open.read_exact(&mut reply))
            .await
            .unwrap()
            .unwrap();
        round_trip(&mut open, QUICK).await.unwrap();
        tokio::time::timeout(QUICK, new.read_exact(&mut reply))
            .await
            .unwrap()
            .unwrap();
        round_trip(&mut new, QUICK).await.unwrap();
    }

    #[tokio::test]
    async fn refuse_resets_open_and_new_connections() {
        let proxy = FaultProxy::start(echo().await).await.unwrap();
        let mut open = TcpStream::connect(proxy.local_addr()).await.unwrap();
        round_trip(&mut open, QUICK).await.unwrap();
        proxy.refuse();
        assert!(round_trip(&mut open, QUICK).await.is_err());
        let new = TcpStream::connect(proxy.local_addr()).await;
        if let Ok(mut new) = new {
            assert!(round_trip(&mut new, QUICK).await.is_err());
        }
        proxy.pass();
        let mut healed = TcpStream::connect(proxy.local_addr()).await.unwrap();
        round_trip(&mut healed, QUICK).await.unwrap();
    }

    #[tokio::test]
    async fn latency_delays_each_chunk() {
        let proxy = FaultProxy::start(echo().await).await.unwrap();
        let mut stream = TcpStream::connect(proxy.local_addr()).await.unwrap();
        proxy.latency(Duration::from_millis(150));
        let started = std::time::Instant::now();
        round_trip(&mut stream, QUICK).await.unwrap();
        // Once each way.
        assert!(
            started.elapsed() >= Duration::from_millis(300),
            "{:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn only_loopback_upstreams() {
        let err = FaultProxy::start("10.0.0.1:5432".parse().unwrap())
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }

    #[tokio::test]
    async fn dropping_the_proxy_resets_its_connections() {
        let proxy = FaultProxy::start(echo().await).await.unwrap();
        let mut stream = TcpStream::connect(proxy.local_addr()).await.unwrap();
        round_trip(&mut stream, QUICK).await.unwrap();
        drop(proxy);
        assert!(round_trip(&mut stream, QUICK).await.is_err());
    }
}
