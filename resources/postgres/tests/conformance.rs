//! The test kit's conformance suite against the real server: directly, and through a fault
//! proxy that resets, refuses and black-holes its connections.

use std::time::Duration;

use nebula_resource::Error;
use nebula_resource_postgres::{Postgres, PostgresConfig, sqlx};
use nebula_resource_testing::{Conformance, FaultProxy};

fn url() -> String {
    std::env::var("NEBULA_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_conforms() {
    let direct = PostgresConfig::new(url()).connect_timeout(Duration::from_secs(2));
    let server = direct.connect_options().expect("a valid URL");
    let upstream = format!("127.0.0.1:{}", server.get_port())
        .parse()
        .expect("a loopback address");
    let proxy = FaultProxy::start(upstream).await.expect("start the proxy");
    let proxied = direct.clone().host("127.0.0.1").port(proxy.port());
    Conformance::new(Postgres, direct)
        .exercise(|conn| {
            // sqlx has no client-side query timeout: the deadline a caller gives a query.
            Box::pin(async move {
                tokio::time::timeout(
                    Duration::from_secs(2),
                    sqlx::query("SELECT 1").execute(&mut *conn),
                )
                .await
                .map_err(Error::check)?
                .map(drop)
                .map_err(Error::check)
            })
        })
        .through_proxy(proxy, proxied)
        .run()
        .await;
}
