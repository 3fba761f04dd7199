//! Behaviour of `#[derive(Config)]`: each attribute with passing and failing values.

use std::collections::HashMap;
use std::time::Duration;

use nebula_resource::{Config, Error, ErrorKind};
use nebula_resource_derive::Config;

/// Validates `config`, expecting a configuration error; returns it.
fn invalid<C: Config>(config: &C) -> Error {
    match config.validate() {
        Ok(()) => panic!("expected a configuration error"),
        Err(err) => {
            assert_eq!(err.kind(), ErrorKind::Config, "{err}");
            err
        }
    }
}

/// Asserts that `err` names `field` and ends with `message`.
fn assert_config_error(err: &Error, field: &str, message: &str) {
    assert_eq!(err.field(), Some(field), "{err}");
    assert_eq!(
        err.to_string(),
        format!("invalid configuration in field `{field}`: {message}")
    );
}

// ---------------------------------------------------------------------------------------------
// non_empty

#[derive(Clone, Config)]
struct NonEmpty {
    #[config(non_empty)]
    name: String,
    #[config(non_empty)]
    tag: &'static str,
    #[config(non_empty)]
    hosts: Vec<String>,
    #[config(non_empty)]
    labels: HashMap<String, String>,
}

fn non_empty() -> NonEmpty {
    NonEmpty {
        name: "db".into(),
        tag: "primary",
        hosts: vec!["10.0.0.1".into()],
        labels: HashMap::from([("team".into(), "infra".into())]),
    }
}

#[test]
fn non_empty_passes_for_non_empty_values() {
    assert!(non_empty().validate().is_ok());
}

#[test]
fn non_empty_rejects_empty_string() {
    let err = invalid(&NonEmpty {
        name: String::new(),
        ..non_empty()
    });
    assert_config_error(&err, "name", "must not be empty");
}

#[test]
fn non_empty_rejects_empty_str() {
    let err = invalid(&NonEmpty {
        tag: "",
        ..non_empty()
    });
    assert_config_error(&err, "tag", "must not be empty");
}

#[test]
fn non_empty_rejects_empty_vec_and_map() {
    let err = invalid(&NonEmpty {
        hosts: Vec::new(),
        ..non_empty()
    });
    assert_config_error(&err, "hosts", "must not be empty");

    let err = invalid(&NonEmpty {
        labels: HashMap::new(),
        ..non_empty()
    });
    assert_config_error(&err, "labels", "must not be empty");
}

// ---------------------------------------------------------------------------------------------
// min / max

#[derive(Clone, Config)]
struct Bounds {
    #[config(min = 1, max = 1000)]
    max_size: u32,
    #[config(min = -10)]
    offset: i64,
    #[config(max = 1.0)]
    ratio: f64,
    #[config(min = Duration::from_millis(10))]
    #[config(max = std::time::Duration::from_secs(60))]
    timeout: Duration,
    #[config(max = LIMIT)]
    limited: usize,
}

const LIMIT: usize = 8;

fn bounds() -> Bounds {
    Bounds {
        max_size: 10,
        offset: 0,
        ratio: 0.5,
        timeout: Duration::from_secs(5),
        limited: 8,
    }
}

#[test]
fn bounds_pass_inside_and_at_the_limits() {
    assert!(bounds().validate().is_ok());
    for max_size in [1, 1000] {
        assert!(
            Bounds {
                max_size,
                ..bounds()
            }
            .validate()
            .is_ok()
        );
    }
    let edges = Bounds {
        offset: -10,
        ratio: 1.0,
        timeout: Duration::from_secs(60),
        ..bounds()
    };
    assert!(edges.validate().is_ok());
}

#[test]
fn min_rejects_a_smaller_value() {
    let err = invalid(&Bounds {
        max_size: 0,
        ..bounds()
    });
    assert_config_error(&err, "max_size", "must be at least 1 (got 0)");

    let err = invalid(&Bounds {
        offset: -11,
        ..bounds()
    });
    assert_config_error(&err, "offset", "must be at least -10 (got -11)");
}

#[test]
fn max_rejects_a_larger_value() {
    let err = invalid(&Bounds {
        max_size: 5000,
        ..bounds()
    });
    assert_config_error(&err, "max_size", "must be at most 1000 (got 5000)");

    let err = invalid(&Bounds {
        ratio: 1.5,
        ..bounds()
    });
    assert_config_error(&err, "ratio", "must be at most 1.0 (got 1.5)");

    let err = invalid(&Bounds {
        limited: 9,
        ..bounds()
    });
    assert_config_error(&err, "limited", "must be at most 8 (got 9)");
}

#[test]
fn nan_fails_a_bound() {
    let err = invalid(&Bounds {
        ratio: f64::NAN,
        ..bounds()
    });
    assert_config_error(&err, "ratio", "must be at most 1.0 (got NaN)");
}

#[test]
fn duration_bounds() {
    let err = invalid(&Bounds {
        timeout: Duration::from_millis(5),
        ..bounds()
    });
    assert_config_error(&err, "timeout", "must be at least 10ms (got 5ms)");

    let err = invalid(&Bounds {
        timeout: Duration::from_secs(90),
        ..bounds()
    });
    assert_config_error(&err, "timeout", "must be at most 60s (got 90s)");
}

#[derive(Clone, Config)]
struct RelativeBound {
    max_size: u32,
    #[config(max = self.max_size)]
    min_idle: u32,
}

#[test]
fn a_bound_may_refer_to_another_field() {
    assert!(
        RelativeBound {
            max_size: 4,
            min_idle: 4
        }
        .validate()
        .is_ok()
    );
    let err = invalid(&RelativeBound {
        max_size: 4,
        min_idle: 5,
    });
    assert_config_error(&err, "min_idle", "must be at most 4 (got 5)");
}

// ---------------------------------------------------------------------------------------------
// secret

#[derive(Clone, Config)]
struct Secrets {
    #[config(secret, min = 100, max = 200)]
    pin: u64,
    #[config(secret)]
    #[config(non_empty)]
    password: String,
    #[config(secret, min = 1000)]
    token: Option<u64>,
    #[config(secret, validate = check_api_key)]
    api_key: String,
}

fn check_api_key(key: &str) -> Result<(), String> {
    if key.len() == 16 {
        Ok(())
    } else {
        Err(format!("must be 16 characters long (got {})", key.len()))
    }
}

/// A value unlikely to appear in a message by accident.
const SECRET_PIN: u64 = 987_654_321;
const SECRET_TOKEN: u64 = 424_242;

fn secrets() -> Secrets {
    Secrets {
        pin: 150,
        password: "hunter2".into(),
        token: Some(5000),
        api_key: "0123456789abcdef".into(),
    }
}

#[test]
fn secret_fields_pass_when_valid() {
    assert!(secrets().validate().is_ok());
    assert!(
        Secrets {
            token: None,
            ..secrets()
        }
        .validate()
        .is_ok()
    );
}

#[test]
fn secret_value_is_never_printed() {
    let err = invalid(&Secrets {
        pin: SECRET_PIN,
        ..secrets()
    });
    assert_config_error(&err, "pin", "must be at most 200");
    assert!(!err.to_string().contains(&SECRET_PIN.to_string()));
    assert!(!format!("{err:?}").contains(&SECRET_PIN.to_string()));

    let err = invalid(&Secrets {
        pin: 7,
        ..secrets()
    });
    assert_config_error(&err, "pin", "must be at least 100");
    assert!(!err.to_string().contains("got"));

    let err = invalid(&Secrets {
        token: Some(SECRET_TOKEN % 1000),
        ..secrets()
    });
    assert_config_error(&err, "token", "must be at least 1000");
    assert!(!err.to_string().contains(&(SECRET_TOKEN % 1000).to_string()));

    let err = invalid(&Secrets {
        password: String::new(),
        ..secrets()
    });
    assert_config_error(&err, "password", "must not be empty");
}

#[test]
fn secret_field_with_validate_uses_the_functions_message() {
    let err = invalid(&Secrets {
        api_key: "s3cr3t-value".into(),
        ..secrets()
    });
    assert_config_error(&err, "api_key", "must be 16 characters long (got 12)");
    assert!(!err.to_string().contains("s3cr3t-value"));
}

// ---------------------------------------------------------------------------------------------
// validate = fn

mod rules {
    pub(crate) fn url(url: &str) -> Result<(), String> {
        if url.starts_with("postgres://") {
            Ok(())
        } else {
            Err(format!("must start with `postgres://` (got `{url}`)"))
        }
    }

    pub(crate) fn even(n: &u32) -> Result<(), &'static str> {
        if n.is_multiple_of(2) {
            Ok(())
        } else {
            Err("must be even")
        }
    }

    pub(crate) fn sorted(ports: &[u16]) -> Result<(), String> {
        if ports.is_sorted() {
            Ok(())
        } else {
            Err(format!("must be sorted (got {ports:?})"))
        }
    }

    pub(crate) fn set_if_odd(v: &Option<u32>) -> Result<(), String> {
        match v {
            Some(n) if n % 2 == 0 => Err(format!("must be odd when set (got {n})")),
            Some(_) | None => Ok(()),
        }
    }
}

#[derive(Clone, Config)]
struct Custom {
    #[config(validate = rules::url)]
    url: String,
    #[config(validate = rules::even)]
    workers: u32,
    #[config(validate = Self::not_localhost)]
    host: String,
    #[config(validate = rules::set_if_odd)]
    optional: Option<u32>,
    #[config(validate = rules::sorted)]
    ports: Vec<u16>,
}

impl Custom {
    fn not_localhost(host: &str) -> Result<(), String> {
        if host == "localhost" {
            Err("must not be `localhost`".into())
        } else {
            Ok(())
        }
    }
}

fn custom() -> Custom {
    Custom {
        url: "postgres://db".into(),
        workers: 4,
        host: "db.internal".into(),
        optional: None,
        ports: vec![80, 443],
    }
}

#[test]
fn validate_fn_passes() {
    assert!(custom().validate().is_ok());
    assert!(
        Custom {
            optional: Some(3),
            ..custom()
        }
        .validate()
        .is_ok()
    );
}

#[test]
fn validate_fn_error_names_the_field() {
    let err = invalid(&Custom {
        url: "mysql://db".into(),
        ..custom()
    });
    assert_config_error(
        &err,
        "url",
        "must start with `postgres://` (got `mysql://db`)",
    );

    let err = invalid(&Custom {
        workers: 3,
        ..custom()
    });
    assert_config_error(&err, "workers", "must be even");

    let err = invalid(&Custom {
        host: "localhost".into(),
        ..custom()
    });
    assert_config_error(&err, "host", "must not be `localhost`");

    // On an `Option` field, the function gets the whole `&Option<T>`.
    let err = invalid(&Custom {
        optional: Some(2),
        ..custom()
    });
    assert_config_error(&err, "optional", "must be odd when set (got 2)");

    // The function may take what the field derefs to (`&[T]` for a `Vec<T>`).
    let err = invalid(&Custom {
        ports: vec![443, 80],
        ..custom()
    });
    assert_config_error(&err, "ports", "must be sorted (got [443, 80])");
}

// ---------------------------------------------------------------------------------------------
// nested

#[derive(Clone, Config)]
struct Tls {
    #[config(non_empty)]
    ca_file: String,
    #[config(min = 1)]
    version: u8,
}

#[derive(Clone, Config)]
struct WithNested {
    #[config(nested)]
    tls: Tls,
    #[config(nested)]
    fallback_tls: Option<Tls>,
}

fn tls() -> Tls {
    Tls {
        ca_file: "/etc/ca.pem".into(),
        version: 3,
    }
}

#[test]
fn nested_passes() {
    let ok = WithNested {
        tls: tls(),
        fallback_tls: None,
    };
    assert!(ok.validate().is_ok());
    let ok = WithNested {
        tls: tls(),
        fallback_tls: Some(tls()),
    };
    assert!(ok.validate().is_ok());
}

#[test]
fn nested_error_is_returned_unchanged() {
    let bad = Tls {
        version: 0,
        ..tls()
    };
    let direct = invalid(&bad);
    let err = invalid(&WithNested {
        tls: bad.clone(),
        fallback_tls: None,
    });
    assert_eq!(err.field(), direct.field());
    assert_eq!(err.to_string(), direct.to_string());
    assert_config_error(&err, "version", "must be at least 1 (got 0)");

    let err = invalid(&WithNested {
        tls: tls(),
        fallback_tls: Some(Tls {
            ca_file: String::new(),
            ..tls()
        }),
    });
    assert_config_error(&err, "ca_file", "must not be empty");
}

// ---------------------------------------------------------------------------------------------
// Option<T>

#[derive(Clone, Config)]
struct Optional {
    #[config(non_empty)]
    name: Option<String>,
    #[config(min = 1, max = 10)]
    count: std::option::Option<u32>,
    #[config(min = Duration::from_secs(1))]
    timeout: core::option::Option<Duration>,
}

#[test]
fn option_none_passes() {
    let none = Optional {
        name: None,
        count: None,
        timeout: None,
    };
    assert!(none.validate().is_ok());
}

#[test]
fn option_some_is_checked() {
    let some = Optional {
        name: Some("x".into()),
        count: Some(10),
        timeout: Some(Duration::from_secs(1)),
    };
    assert!(some.validate().is_ok());

    let err = invalid(&Optional {
        name: Some(String::new()),
        ..some.clone()
    });
    assert_config_error(&err, "name", "must not be empty");

    let err = invalid(&Optional {
        count: Some(0),
        ..some.clone()
    });
    assert_config_error(&err, "count", "must be at least 1 (got 0)");

    let err = invalid(&Optional {
        count: Some(11),
        ..some.clone()
    });
    assert_config_error(&err, "count", "must be at most 10 (got 11)");

    let err = invalid(&Optional {
        timeout: Some(Duration::from_millis(1)),
        ..some
    });
    assert_config_error(&err, "timeout", "must be at least 1s (got 1ms)");
}

// ---------------------------------------------------------------------------------------------
// struct-level validate, order

fn idle_below_max(config: &Pool) -> Result<(), Error> {
    if config.min_idle > config.max_size {
        return Err(Error::config("min_idle", "must not exceed `max_size`"));
    }
    Ok(())
}

#[derive(Clone, Config)]
#[config(validate = idle_below_max)]
struct Pool {
    #[config(min = 1)]
    max_size: u32,
    #[config(max = 100)]
    min_idle: u32,
    #[config(non_empty)]
    name: String,
}

fn pool() -> Pool {
    Pool {
        max_size: 4,
        min_idle: 1,
        name: "pool".into(),
    }
}

#[test]
fn struct_level_validate_passes_and_fails() {
    assert!(pool().validate().is_ok());
    let err = invalid(&Pool {
        min_idle: 5,
        ..pool()
    });
    assert_config_error(&err, "min_idle", "must not exceed `max_size`");
}

#[test]
fn struct_level_validate_runs_after_field_checks() {
    // Both the `name` check and the cross-field rule fail: the field check wins.
    let err = invalid(&Pool {
        min_idle: 5,
        name: String::new(),
        ..pool()
    });
    assert_config_error(&err, "name", "must not be empty");
}

#[test]
fn first_failing_field_in_declaration_order_wins() {
    let err = invalid(&Pool {
        max_size: 0,
        min_idle: 500,
        name: String::new(),
    });
    assert_config_error(&err, "max_size", "must be at least 1 (got 0)");

    let err = invalid(&Pool {
        min_idle: 500,
        name: String::new(),
        ..pool()
    });
    assert_config_error(&err, "min_idle", "must be at most 100 (got 500)");
}

/// A type that is at once ordered, `Config` and checked by a function.
#[derive(Clone, Debug, PartialEq, PartialOrd)]
struct Level(u32);

impl Config for Level {
    fn validate(&self) -> Result<(), Error> {
        if self.0 == 7 || self.0 == 8 {
            Err(Error::config("level", "7 and 8 are reserved"))
        } else {
            Ok(())
        }
    }
}

fn not_unlucky(level: &Level) -> Result<(), String> {
    if level.0 == 7 || level.0 < 5 {
        Err(format!("{} is unlucky", level.0))
    } else {
        Ok(())
    }
}

#[derive(Clone, Config)]
struct WithinField {
    // Written in another order than the one they run in.
    #[config(nested, validate = not_unlucky, max = Level(10), min = Level(5))]
    value: Level,
}

#[test]
fn checks_within_a_field_run_min_max_validate_nested() {
    assert!(WithinField { value: Level(6) }.validate().is_ok());

    // min and validate fail: min first.
    let err = invalid(&WithinField { value: Level(3) });
    assert_config_error(&err, "value", "must be at least Level(5) (got Level(3))");

    let err = invalid(&WithinField { value: Level(11) });
    assert_config_error(&err, "value", "must be at most Level(10) (got Level(11))");

    // validate and nested fail: validate first.
    let err = invalid(&WithinField { value: Level(7) });
    assert_config_error(&err, "value", "7 is unlucky");

    let err = invalid(&WithinField { value: Level(8) });
    assert_config_error(&err, "level", "7 and 8 are reserved");
}

// ---------------------------------------------------------------------------------------------
// generics, raw identifiers, unit structs, crate path

#[derive(Clone, Config)]
struct Generic<T: Default + From<u8>, N>
where
    N: Clone,
{
    #[config(min = T::default(), max = T::from(100_u8))]
    value: T,
    #[config(nested)]
    inner: Option<N>,
    #[config(non_empty)]
    items: Vec<T>,
}

#[test]
fn generic_structs() {
    let ok = Generic {
        value: 5_u32,
        inner: Some(tls()),
        items: vec![1],
    };
    assert!(ok.validate().is_ok());

    let err = invalid(&Generic {
        value: 200_u32,
        inner: None::<Tls>,
        items: vec![1],
    });
    assert_config_error(&err, "value", "must be at most 100 (got 200)");

    let err = invalid(&Generic {
        value: -1.5_f64,
        inner: None::<Tls>,
        items: vec![1.0],
    });
    assert_config_error(&err, "value", "must be at least 0.0 (got -1.5)");

    let err = invalid(&Generic {
        value: 1_i32,
        inner: Some(Tls {
            version: 0,
            ..tls()
        }),
        items: vec![1],
    });
    assert_config_error(&err, "version", "must be at least 1 (got 0)");
}

#[derive(Clone, Config)]
struct Borrowed<'a> {
    #[config(non_empty)]
    name: &'a str,
}

#[test]
fn lifetime_generic_struct() {
    assert!(Borrowed { name: "x" }.validate().is_ok());
    let err = invalid(&Borrowed { name: "" });
    assert_config_error(&err, "name", "must not be empty");
}

#[derive(Clone, Config)]
struct ConstGeneric<const N: usize> {
    #[config(max = N)]
    len: usize,
}

#[test]
fn const_generic_struct() {
    assert!(ConstGeneric::<4> { len: 4 }.validate().is_ok());
    let err = invalid(&ConstGeneric::<4> { len: 5 });
    assert_config_error(&err, "len", "must be at most 4 (got 5)");
}

#[derive(Clone, Config)]
struct RawIdent {
    #[config(non_empty)]
    r#type: String,
}

#[test]
fn raw_identifier_is_reported_without_prefix() {
    let err = invalid(&RawIdent {
        r#type: String::new(),
    });
    assert_config_error(&err, "type", "must not be empty");
}

#[derive(Clone, Config)]
struct NoChecks {
    _name: String,
    #[config()]
    _port: u16,
}

#[derive(Clone, Config)]
struct Unit;

#[test]
fn structs_without_checks_are_always_valid() {
    let no_checks = NoChecks {
        _name: String::new(),
        _port: 0,
    };
    assert!(no_checks.validate().is_ok());
    assert!(Unit.validate().is_ok());
}

mod reexport {
    pub(crate) use nebula_resource as core_crate;
}

#[derive(Clone, Config)]
#[config(crate = reexport::core_crate)]
struct ViaReexport {
    #[config(min = 1)]
    n: u8,
}

#[test]
fn crate_path_can_be_overridden() {
    assert!(ViaReexport { n: 1 }.validate().is_ok());
    let err = invalid(&ViaReexport { n: 0 });
    assert_config_error(&err, "n", "must be at least 1 (got 0)");
}
