//! Bad configurations are rejected by `build()` naming the field, and no password ever shows in
//! an error, a `Debug` or a `Display` — not even when connecting with it fails.

mod common;

use std::time::Duration;

use common::mysql_url;
use nebula_resource::{ErrorKind, Policy, PoolConfig, ResourceManager};
use nebula_resource_mysql::{MySql, MySqlConfig};

const PASSWORD: &str = "s3cr3tpw";

/// The server under test, with `PASSWORD` as the password (root's is empty there, so
/// connecting with it fails).
fn url_with_password() -> String {
    let url = mysql_url();
    let (scheme, rest) = url.split_once("://").expect("a URL");
    let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    format!("{scheme}://root:{PASSWORD}@{rest}")
}

#[track_caller]
fn assert_hidden(text: &str) {
    assert!(!text.contains(PASSWORD), "the password leaked: {text}");
}

async fn build(config: MySqlConfig) -> Result<ResourceManager, nebula_resource::Error> {
    ResourceManager::builder()
        .register_with(
            MySql,
            config,
            Policy::default().pool(
                PoolConfig::default()
                    .max_size(2)
                    .acquire_timeout(Duration::from_secs(5)),
            ),
        )
        .build()
        .await
}

#[tokio::test]
async fn bad_configs_are_rejected_by_build_naming_the_field() {
    let url = url_with_password();
    let cases = [
        (MySqlConfig::new(""), "url"),
        (MySqlConfig::new("127.0.0.1:3306"), "url"),
        (
            MySqlConfig::new(format!("postgres://root:{PASSWORD}@127.0.0.1/test")),
            "url",
        ),
        (MySqlConfig::new(format!("{url}?sslmode=sometimes")), "url"),
        (MySqlConfig::new(format!("{url}?connect_timeout=5")), "url"),
        (MySqlConfig::new(url.clone()).port(0), "port"),
        (
            MySqlConfig::new(url.clone()).connect_timeout(Duration::ZERO),
            "connect_timeout",
        ),
        (
            MySqlConfig::new(url.clone()).connect_timeout(Duration::from_secs(86_400)),
            "connect_timeout",
        ),
        (
            MySqlConfig::new(url.clone()).statement_cache_capacity(0),
            "statement_cache_capacity",
        ),
        (
            MySqlConfig::new(url.clone()).statement_cache_capacity(1_000_000),
            "statement_cache_capacity",
        ),
        (
            MySqlConfig::new(url.clone()).charset("utf8mb4'; --"),
            "charset",
        ),
        (MySqlConfig::new(url.clone()).database(""), "database"),
        (MySqlConfig::from_host(""), "host"),
    ];
    for (config, field) in cases {
        assert_hidden(&format!("{config:?} {config}"));
        let err = build(config).await.expect_err("rejected");
        assert_eq!(err.kind(), ErrorKind::Config, "{err}");
        assert_eq!(err.field(), Some(field), "{err}");
        let text = format!("{err} {err:?}");
        assert!(text.contains("resource `mysql`"), "{text}");
        assert!(text.contains(&format!("field `{field}`")), "{text}");
        assert_hidden(&text);
    }
}

#[tokio::test]
async fn a_wrong_password_fails_to_connect_without_showing_it() {
    let config = MySqlConfig::new(url_with_password());
    assert_hidden(&format!("{config:?} {config:#?} {config}"));
    let manager = build(config).await.expect("valid configuration");
    let err = manager
        .acquire::<MySql>()
        .await
        .expect_err("the password is wrong");
    let text = format!("{err} {err:?} {:?}", std::error::Error::source(&err));
    assert_hidden(&text);
    assert_eq!(err.kind(), ErrorKind::Create, "{text}");
    assert!(text.contains("Access denied"), "{text}");
    // Authentication refused is permanent: not retried, and not retryable for the caller.
    assert!(!err.is_retryable(), "{text}");
    assert!(!text.contains("gave up after"), "{text}");
    assert!(
        text.contains("root:***@"),
        "names the server, password hidden: {text}"
    );
    let stats = manager.handle::<MySql>().unwrap().stats();
    assert_eq!((stats.size, stats.create_errors), (0, 1), "{stats:?}");
}

#[tokio::test]
async fn a_password_given_as_a_field_is_hidden_too() {
    let config = MySqlConfig::new(mysql_url()).password(PASSWORD);
    assert_hidden(&format!("{config:?} {config}"));
    let manager = build(config).await.expect("valid configuration");
    let err = manager
        .acquire::<MySql>()
        .await
        .expect_err("the password is wrong");
    let text = format!("{err} {err:?}");
    assert_hidden(&text);
    assert!(text.contains("Access denied"), "{text}");
}

#[tokio::test]
async fn an_unreachable_server_fails_with_a_create_error_naming_it() {
    // Port 1 on loopback: nothing listens there.
    let config = MySqlConfig::new(format!("mysql://root:{PASSWORD}@127.0.0.1:1/test"))
        .connect_timeout(Duration::from_secs(2));
    let manager = build(config).await.expect("valid configuration");
    let err = manager
        .acquire::<MySql>()
        .await
        .expect_err("nothing listens");
    let text = format!("{err} {err:?}");
    assert_hidden(&text);
    assert_eq!(err.kind(), ErrorKind::Create, "{text}");
    assert!(text.contains("mysql://root:***@127.0.0.1:1/test"), "{text}");
}

#[tokio::test]
async fn min_idle_warm_up_fails_build_with_the_connect_error() {
    let err = ResourceManager::builder()
        .register_with(
            MySql,
            MySqlConfig::new(url_with_password()),
            Policy::default().pool(PoolConfig::default().max_size(2).min_idle(1)),
        )
        .build()
        .await
        .expect_err("the password is wrong");
    let text = format!("{err} {err:?}");
    assert_hidden(&text);
    assert!(text.contains("Access denied"), "{text}");
}
