//! `#[derive(Config)]` for `nebula-resource` configurations.
//!
//! Resource authors describe their settings as a struct and implement the `Config` trait of
//! [`nebula-resource`](https://docs.rs/nebula-resource), whose `validate` method rejects bad
//! settings with `Error::config(field, message)` before anything is created. This crate writes
//! that `validate` method from attributes on the fields.
//!
//! # Setup
//!
//! The generated code refers to the core crate by its path `::nebula_resource`, so depend on
//! both crates (under their own names):
//!
//! ```toml
//! [dependencies]
//! nebula-resource = "0.1"
//! nebula-resource-derive = "0.1"
//! ```
//!
//! If the core crate is renamed or re-exported, say where it is with `#[config(crate = path)]`
//! on the struct (see [below](#struct-attributes)).
//!
//! The trait and the derive are both named `Config` and live in different namespaces, so both
//! can be imported at once, as with serde's `Serialize`.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//!
//! use nebula_resource::{Config, Error};
//! use nebula_resource_derive::Config;
//!
//! fn valid_url(url: &str) -> Result<(), String> {
//!     if url.starts_with("postgres://") {
//!         Ok(())
//!     } else {
//!         Err(format!("must start with `postgres://` (got `{url}`)"))
//!     }
//! }
//!
//! fn idle_below_max(config: &PostgresConfig) -> Result<(), Error> {
//!     if config.min_idle > config.max_size {
//!         return Err(Error::config("min_idle", "must not exceed `max_size`"));
//!     }
//!     Ok(())
//! }
//!
//! #[derive(Clone, Config)]
//! struct TlsConfig {
//!     #[config(non_empty)]
//!     ca_file: String,
//! }
//!
//! #[derive(Clone, Config)]
//! #[config(validate = idle_below_max)]
//! struct PostgresConfig {
//!     #[config(non_empty, validate = valid_url)]
//!     url: String,
//!     #[config(secret, non_empty)]
//!     password: String,
//!     #[config(min = 1, max = 1000)]
//!     max_size: u32,
//!     min_idle: u32,
//!     #[config(min = Duration::from_millis(10), max = Duration::from_secs(60))]
//!     connect_timeout: Duration,
//!     /// Checked only when set.
//!     #[config(min = 1)]
//!     statement_cache: Option<usize>,
//!     #[config(nested)]
//!     tls: Option<TlsConfig>,
//! }
//!
//! let good = PostgresConfig {
//!     url: "postgres://db.internal/app".into(),
//!     password: "hunter2".into(),
//!     max_size: 16,
//!     min_idle: 2,
//!     connect_timeout: Duration::from_secs(5),
//!     statement_cache: None,
//!     tls: Some(TlsConfig { ca_file: "/etc/ssl/ca.pem".into() }),
//! };
//! assert!(good.validate().is_ok());
//!
//! let err = PostgresConfig { max_size: 0, ..good.clone() }.validate().unwrap_err();
//! assert_eq!(err.field(), Some("max_size"));
//! assert_eq!(
//!     err.to_string(),
//!     "invalid configuration in field `max_size`: must be at least 1 (got 0)",
//! );
//!
//! let err = PostgresConfig { connect_timeout: Duration::from_secs(90), ..good.clone() }
//!     .validate()
//!     .unwrap_err();
//! assert!(err.to_string().ends_with("must be at most 60s (got 90s)"));
//!
//! let err = PostgresConfig { url: "mysql://db".into(), ..good.clone() }.validate().unwrap_err();
//! assert_eq!(err.field(), Some("url"));
//! assert!(err.to_string().ends_with("must start with `postgres://` (got `mysql://db`)"));
//!
//! // A nested config's error comes back unchanged: it names the nested field.
//! let tls = Some(TlsConfig { ca_file: String::new() });
//! let err = PostgresConfig { tls, ..good.clone() }.validate().unwrap_err();
//! assert_eq!(err.field(), Some("ca_file"));
//!
//! // The struct-level rule runs once every field is valid.
//! let err = PostgresConfig { min_idle: 20, ..good }.validate().unwrap_err();
//! assert_eq!(err.field(), Some("min_idle"));
//! ```
//!
//! # Field attributes
//!
//! Several keys may share one attribute (`#[config(min = 1, max = 1000)]`) or be spread over
//! several `#[config(...)]` attributes on the same field; a key may appear only once per field.
//!
//! | Attribute | Applies to | Fails with |
//! |---|---|---|
//! | `non_empty` | anything with an `is_empty()` method: `String`, `&str`, `Vec<T>`, maps... | `must not be empty` |
//! | `min = EXPR` | any [`PartialOrd`] + [`Debug`](std::fmt::Debug) type: integers, floats, [`Duration`](std::time::Duration)... | `must be at least {min:?} (got {value:?})` |
//! | `max = EXPR` | the same | `must be at most {max:?} (got {value:?})` |
//! | `validate = path::to_fn` | any field; the function gets `&FieldType` (or what it derefs to: `&str` for a `String`, `&[T]` for a `Vec<T>`) and returns `Result<(), String>` (or any error that is `Into<String>`) | the function's message |
//! | `nested` | a field whose type implements `Config` | the nested error, unchanged |
//! | `secret` | any field: a marker, not a check | — |
//!
//! * **`min` / `max`**: `EXPR` is any Rust expression of the field's type (`1`, `0.5`,
//!   `std::time::Duration::from_secs(1)`, a constant); it is evaluated inside `validate`, so it
//!   may also refer to other fields, as in `max = self.max_size`. The bound and the value are
//!   printed with `{:?}`. A value that does not compare with the bound (a float `NaN`) fails.
//! * **`secret`**: the field's value is never written into a message: `min` / `max` failures
//!   read `must be at least {min:?}` with no `(got ...)` (the bound, written in the code, is
//!   still printed). A `validate` function writes its own message: keep secrets out of it.
//! * **`Option<T>`**: `non_empty`, `min`, `max` and `nested` check the inner value when it is
//!   `Some`, and pass for `None`; `validate` gets the whole `&Option<T>`. The detection is by
//!   spelling: `Option<T>`, `std::option::Option<T>` or `core::option::Option<T>` (not a type
//!   alias of it).
//!
//! # Struct attributes
//!
//! * **`#[config(validate = path::to_fn)]`**: a `fn(&Self) -> Result<(), nebula_resource::Error>`
//!   for rules across fields, run after every field check has passed. Its error is returned
//!   unchanged, so build it with `Error::config("field", "...")` to name a field.
//! * **`#[config(crate = path::to::nebula_resource)]`**: where the core crate is, if it is not
//!   reachable as `::nebula_resource` (renamed dependency, re-export).
//!
//! # Order and errors
//!
//! Fields are checked in declaration order and, within a field, in the order `non_empty`, `min`,
//! `max`, `validate`, `nested`; then the struct-level function. The first failure is returned.
//! Errors made by the generated code are `Error::config(field, message)` where `field` is the
//! Rust field name (`r#type` is reported as `type`):
//!
//! ```
//! use nebula_resource::{Config, ErrorKind};
//! use nebula_resource_derive::Config;
//!
//! #[derive(Clone, Config)]
//! struct ApiConfig {
//!     #[config(secret, min = 32)]
//!     key_length: usize,
//!     #[config(max = 10)]
//!     retries: u8,
//! }
//!
//! let err = ApiConfig { key_length: 7, retries: 99 }.validate().unwrap_err();
//! assert_eq!(err.kind(), ErrorKind::Config);
//! assert_eq!(err.field(), Some("key_length"));
//! assert_eq!(err.to_string(), "invalid configuration in field `key_length`: must be at least 32");
//! ```
//!
//! # Generics
//!
//! Generic structs are supported. The impl keeps the struct's own bounds and where-clause, and
//! adds `Self: Clone + Send + Sync + 'static` (what `Config` requires) and, for a field whose
//! type mentions a type parameter, the bounds its checks need (`PartialOrd` + `Debug` for
//! `min`/`max`, `Config` for `nested`):
//!
//! ```
//! use std::time::Duration;
//!
//! use nebula_resource::Config;
//! use nebula_resource_derive::Config;
//!
//! #[derive(Clone, Config)]
//! struct Limits<T: Default> {
//!     #[config(min = T::default())]
//!     floor: T,
//! }
//!
//! assert!(Limits { floor: 3_u32 }.validate().is_ok());
//! assert!(Limits { floor: Duration::ZERO }.validate().is_ok());
//! assert!(Limits { floor: -1_i64 }.validate().is_err());
//! ```
//!
//! # Misuse
//!
//! Mistakes are reported as compile errors located at the offending tokens: a derive on an enum,
//! a union or a tuple struct, an unknown or repeated key, a flag given a value, a missing value,
//! a string where a function path is expected. A check that does not fit the field's type
//! (`non_empty` on a `u32`, a bound of another type) is reported by the compiler at the
//! attribute.
//!
//! ```compile_fail
//! use nebula_resource_derive::Config;
//!
//! #[derive(Clone, Config)]
//! struct Typo {
//!     #[config(non_emtpy)] // error: unknown `config` attribute `non_emtpy` on a field
//!     name: String,
//! }
//! ```
//!
//! ```compile_fail
//! use nebula_resource_derive::Config;
//!
//! #[derive(Clone, Config)]
//! enum Mode { // error: `#[derive(Config)]` supports only structs with named fields, not enums
//!     Fast,
//!     Safe,
//! }
//! ```
//!
//! ```compile_fail
//! use nebula_resource_derive::Config;
//!
//! #[derive(Clone, Config)]
//! struct Port(#[config(min = 1)] u16); // error: ... not tuple structs
//! ```
//!
//! ```compile_fail
//! use nebula_resource_derive::Config;
//!
//! #[derive(Clone, Config)]
//! struct Quoted {
//!     #[config(validate = "check")] // error: expected a path to a function, not a string
//!     name: String,
//! }
//! ```

mod attrs;
mod expand;

use proc_macro::TokenStream;

/// Implements `nebula_resource::Config` for a struct with named fields, generating `validate`
/// from `#[config(...)]` attributes.
///
/// Field attributes: `non_empty`, `min = EXPR`, `max = EXPR`, `validate = path::to_fn`,
/// `nested`, `secret`. Struct attributes: `validate = path::to_fn`, `crate = path`. See the
/// [crate documentation](crate) for what each one checks and the messages it produces.
///
/// ```
/// use nebula_resource::Config;
/// use nebula_resource_derive::Config;
///
/// #[derive(Clone, Config)]
/// struct EchoConfig {
///     #[config(non_empty)]
///     greeting: String,
/// }
///
/// let err = EchoConfig { greeting: String::new() }.validate().unwrap_err();
/// assert_eq!(err.field(), Some("greeting"));
/// assert_eq!(err.to_string(), "invalid configuration in field `greeting`: must not be empty");
/// ```
#[proc_macro_derive(Config, attributes(config))]
pub fn derive_config(input: TokenStream) -> TokenStream {
    let input = syn::parse_macro_input!(input as syn::DeriveInput);
    expand::derive(&input)
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}
