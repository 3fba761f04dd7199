//! The conformance suite tested on a resource of its own: a TCP echo client, against an echo
//! server this test runs on loopback. A client whose calls carry a deadline passes every
//! scenario; one whose calls hang on a silent link fails `backend_killed`, by name.

use std::net::SocketAddr;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use nebula_resource::{Config, CreateContext, Error, Resource};
use nebula_resource_testing::{Conformance, FaultProxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Clone)]
struct EchoConfig {
    address: SocketAddr,
}

impl Config for EchoConfig {}

/// One TCP connection to the echo server per instance.
struct Echo;

impl Resource for Echo {
    type Config = EchoConfig;
    type Instance = TcpStream;
    const KEY: &'static str = "echo";

    async fn create(&self, config: &EchoConfig, _: &CreateContext) -> Result<TcpStream, Error> {
        tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(config.address))
            .await
            .map_err(Error::create)?
            .map_err(Error::create)
    }

    fn is_broken(&self, stream: &TcpStream) -> bool {
        peer_gone(stream)
    }
}

/// Whether the server closed or reset the connection, or left bytes no one asked for: a peek
/// without waiting. Without it the suite fails `backend_killed`: a reset connection goes back
/// to the pool and is handed out again, failing every call on it.
fn peer_gone(stream: &TcpStream) -> bool {
    let mut byte = [0_u8];
    let mut buf = tokio::io::ReadBuf::new(&mut byte);
    let mut cx = Context::from_waker(Waker::noop());
    !matches!(stream.poll_peek(&mut cx, &mut buf), Poll::Pending)
}

/// An echo server on a free loopback port, for as long as the test runs.
async fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("its address");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut read, mut write) = stream.split();
                let _ = tokio::io::copy(&mut read, &mut write).await;
            });
        }
    });
    address
}

/// Write a byte and read it back.
async fn round_trip(stream: &mut TcpStream) -> std::io::Result<()> {
    let mut byte = [0_u8];
    stream.write_all(b"x").await?;
    stream.read_exact(&mut byte).await.map(drop)
}

async fn suite() -> Conformance<Echo> {
    let server = echo_server().await;
    let proxy = FaultProxy::start(server).await.expect("start the proxy");
    let proxied = EchoConfig {
        address: proxy.local_addr(),
    };
    Conformance::new(Echo, EchoConfig { address: server })
        .through_proxy(proxy, proxied)
        .patience(Duration::from_secs(5))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_with_deadlines_passes_every_scenario() {
    suite()
        .await
        .exercise(|stream| {
            Box::pin(async move {
                tokio::time::timeout(Duration::from_secs(1), round_trip(stream))
                    .await
                    .map_err(Error::check)?
                    .map_err(Error::check)
            })
        })
        .run()
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_hangs_on_a_silent_link_fails_backend_killed() {
    let suite = suite()
        .await
        .exercise(|stream| Box::pin(async move { round_trip(stream).await.map_err(Error::check) }));
    let failed = tokio::spawn(suite.run())
        .await
        .expect_err("the suite fails the resource");
    let message = failed
        .into_panic()
        .downcast::<String>()
        .map(|message| *message)
        .expect("a message");
    assert!(
        message.contains("failed 1 conformance scenario(s)")
            && message.contains("- backend_killed: in a black hole: the exercise did not finish"),
        "{message}"
    );
}
