//! Bad configurations are rejected by `build()` before anything connects, naming the resource
//! and the field; a failed connection names the server. The password appears in no error,
//! `Debug` or `Display` text.

mod common;

use std::time::Duration;

use common::url;
use nebula_resource::{Error, ErrorKind, PoolConfig, ResourceManager, TimeoutPhase};
use nebula_resource_postgres::{Postgres, PostgresConfig};
use tokio::net::TcpListener;

const PASSWORD: &str = "s3cr3tpw";

fn with_password() -> String {
    format!("postgres://postgres:{PASSWORD}@127.0.0.1:5432/test")
}

#[track_caller]
fn assert_hidden(text: &str) {
    assert!(!text.contains(PASSWORD), "the password leaked: {text}");
}

fn texts(err: &Error) -> String {
    let mut all = format!("{err} {err:?}");
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        all.push_str(&format!(" | {cause} {cause:?}"));
        source = cause.source();
    }
    all
}

async fn build(config: PostgresConfig, pool: PoolConfig) -> Result<ResourceManager, Error> {
    ResourceManager::builder()
        .register_with(
            Postgres,
            config,
            nebula_resource::Policy::default().pool(pool),
        )
        .build()
        .await
}

#[tokio::test]
async fn bad_configs_are_rejected_by_build_naming_the_field() {
    let cases = [
        (PostgresConfig::new(""), "url"),
        (
            PostgresConfig::new(format!("mysql://root:{PASSWORD}@127.0.0.1:3306/test")),
            "url",
        ),
        (PostgresConfig::new(PASSWORD), "url"),
        (
            PostgresConfig::new(format!("postgres://postgres:{PASSWORD}@127.0.0.1:0/test")),
            "url",
        ),
        (
            PostgresConfig::new(format!(
                "postgres://postgres:{PASSWORD}@127.0.0.1:99999/test"
            )),
            "url",
        ),
        (
            PostgresConfig::new(format!(
                "{}?sslmode=require&passwd={PASSWORD}",
                with_password()
            )),
            "url",
        ),
        (PostgresConfig::new(with_password()).port(0), "port"),
        (
            PostgresConfig::new(with_password()).connect_timeout(Duration::ZERO),
            "connect_timeout",
        ),
        (
            PostgresConfig::new(with_password()).connect_timeout(Duration::from_secs(86_400)),
            "connect_timeout",
        ),
        (
            PostgresConfig::new(with_password()).statement_cache_capacity(1_000_000),
            "statement_cache_capacity",
        ),
        (
            PostgresConfig::new(with_password()).application_name("x".repeat(100)),
            "application_name",
        ),
        (PostgresConfig::from_host(""), "host"),
        (
            PostgresConfig::from_host("127.0.0.1").password(format!("{PASSWORD}\0")),
            "password",
        ),
    ];
    for (config, field) in cases {
        assert_hidden(&format!("{config} {config:?}"));
        let err = build(config, PoolConfig::default()).await.unwrap_err();
        let text = texts(&err);
        assert_eq!(err.kind(), ErrorKind::Config, "{text}");
        assert_eq!(err.field(), Some(field), "{text}");
        assert_eq!(err.resource_key(), Some("postgres"), "{text}");
        assert!(
            text.starts_with(&format!(
                "resource `postgres`: invalid configuration in field `{field}`"
            )),
            "{text}"
        );
        assert_hidden(&text);
    }
}

#[tokio::test]
async fn a_bad_pool_setting_names_its_field() {
    let err = build(
        PostgresConfig::new(with_password()),
        PoolConfig::default().max_size(0),
    )
    .await
    .unwrap_err();
    assert_eq!(err.field(), Some("pool.max_size"));
    assert_hidden(&texts(&err));
}

#[tokio::test]
async fn a_good_config_with_a_password_connects_without_showing_it() {
    // The server trusts local connections, so any password is accepted.
    let config = PostgresConfig::new(url()).password(PASSWORD);
    assert_hidden(&format!("{config} {config:?}"));
    let manager = build(config, PoolConfig::default().min_idle(1))
        .await
        .unwrap();
    let conn = manager.acquire::<Postgres>().await.unwrap();
    assert_hidden(&format!("{conn:?} {manager:?} {:?}", manager.status()));
}

#[tokio::test]
async fn a_refused_connection_names_the_server_but_not_the_password() {
    // Nothing listens on a port just released.
    let port = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = PostgresConfig::new(format!(
        "postgres://postgres:{PASSWORD}@127.0.0.1:{port}/test"
    ));

    // During build (min_idle warm-up): a create error.
    let err = build(config.clone(), PoolConfig::default().min_idle(1))
        .await
        .unwrap_err();
    let text = texts(&err);
    assert_eq!(err.kind(), ErrorKind::Create, "{text}");
    assert!(
        text.contains(&format!(
            "connecting to postgres://postgres:***@127.0.0.1:{port}/test"
        )),
        "{text}"
    );
    assert_hidden(&text);

    // On acquire: the create error, or a timeout carrying it.
    let manager = build(
        config,
        PoolConfig::default().acquire_timeout(Duration::from_millis(500)),
    )
    .await
    .unwrap();
    let err = manager.acquire::<Postgres>().await.unwrap_err();
    let text = texts(&err);
    assert!(
        matches!(err.kind(), ErrorKind::Create | ErrorKind::Timeout),
        "{text}"
    );
    assert!(text.contains("postgres://postgres:***@127.0.0.1"), "{text}");
    assert_hidden(&text);
}

#[tokio::test]
async fn a_server_that_never_answers_hits_the_connect_timeout() {
    // Accepts TCP connections and never says a word.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let config = PostgresConfig::new(format!(
        "postgres://postgres:{PASSWORD}@127.0.0.1:{port}/test"
    ))
    .tls_mode(nebula_resource_postgres::TlsMode::Disable)
    .connect_timeout(Duration::from_millis(200));
    let err = build(
        config,
        PoolConfig::default()
            .min_idle(1)
            .create_timeout(Duration::from_secs(5)),
    )
    .await
    .unwrap_err();
    let text = texts(&err);
    assert_eq!(err.kind(), ErrorKind::Create, "{text}");
    assert_ne!(err.timeout_phase(), Some(TimeoutPhase::Create), "{text}");
    assert!(text.contains("connect timeout of 200ms"), "{text}");
    assert!(text.contains(&format!("127.0.0.1:{port}")), "{text}");
    assert_hidden(&text);
    drop(listener);
}
