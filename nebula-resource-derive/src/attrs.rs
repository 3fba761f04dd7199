//! Parsing of the `#[config(...)]` attributes, on the struct and on its fields.
//!
//! Every problem is reported as a [`syn::Error`] located at the offending tokens; nothing here
//! panics on user input.

use proc_macro2::Span;
use syn::meta::ParseNestedMeta;
use syn::spanned::Spanned;
use syn::{Attribute, Expr, ExprPath, Path, Token};

/// The keys accepted on a field, for error messages.
const FIELD_KEYS: &str = "`non_empty`, `min`, `max`, `validate`, `nested`, `secret`";
/// The keys accepted on the struct, for error messages.
const STRUCT_KEYS: &str = "`validate`, `crate`";

/// `#[config(...)]` on the struct itself.
#[derive(Default)]
pub(crate) struct StructAttrs {
    /// `validate = path`: a `fn(&Self) -> Result<(), Error>` run after the field checks.
    pub(crate) validate: Option<ExprPath>,
    /// `crate = path`: where the core crate is, instead of `::nebula_resource`.
    pub(crate) krate: Option<Path>,
}

/// A `min = EXPR` or `max = EXPR` bound.
pub(crate) struct Bound {
    /// The span of the key (`min` / `max`), where type errors of the check are reported.
    pub(crate) span: Span,
    /// The bound.
    pub(crate) expr: Expr,
}

/// `#[config(...)]` on one field (several such attributes are merged).
#[derive(Default)]
pub(crate) struct FieldAttrs {
    /// `non_empty`: the span of the key.
    pub(crate) non_empty: Option<Span>,
    /// `min = EXPR`.
    pub(crate) min: Option<Bound>,
    /// `max = EXPR`.
    pub(crate) max: Option<Bound>,
    /// `validate = path`: a `fn(&FieldType) -> Result<(), impl Into<String>>`.
    pub(crate) validate: Option<ExprPath>,
    /// `nested`: the span of the key.
    pub(crate) nested: Option<Span>,
    /// `secret`: the span of the key.
    pub(crate) secret: Option<Span>,
}

impl FieldAttrs {
    /// Whether the field carries any check (as opposed to none, or only `secret`).
    pub(crate) fn has_checks(&self) -> bool {
        self.non_empty.is_some()
            || self.min.is_some()
            || self.max.is_some()
            || self.validate.is_some()
            || self.nested.is_some()
    }
}

/// Runs `each` over every key of every `#[config(...)]` attribute in `attrs`, collecting all
/// errors (one per malformed attribute) instead of stopping at the first.
fn for_each_key(
    attrs: &[Attribute],
    mut each: impl FnMut(ParseNestedMeta<'_>) -> syn::Result<()>,
) -> syn::Result<()> {
    let mut errors: Option<syn::Error> = None;
    for attr in attrs.iter().filter(|a| a.path().is_ident("config")) {
        if let Err(err) = attr.parse_nested_meta(&mut each) {
            match &mut errors {
                Some(all) => all.combine(err),
                None => errors = Some(err),
            }
        }
    }
    errors.map_or(Ok(()), Err)
}

/// The key as written, for messages (`foo::bar` for a multi-segment path).
fn key_name(path: &Path) -> String {
    path.segments
        .iter()
        .map(|s| s.ident.to_string())
        .collect::<Vec<_>>()
        .join("::")
}

/// The key as a single identifier (keywords such as `crate` included), if it is one.
fn key_ident(path: &Path) -> Option<String> {
    if path.leading_colon.is_some() || path.segments.len() != 1 {
        return None;
    }
    path.segments
        .first()
        .filter(|s| s.arguments.is_none())
        .map(|s| s.ident.to_string())
}

/// Rejects a second occurrence of `key` on the same item.
fn once<T>(slot: &Option<T>, meta: &ParseNestedMeta<'_>, key: &str) -> syn::Result<()> {
    if slot.is_some() {
        return Err(syn::Error::new_spanned(
            &meta.path,
            format!("duplicate `{key}` in `#[config(...)]`"),
        ));
    }
    Ok(())
}

/// A flag key (`non_empty`, `nested`, `secret`): no value allowed.
fn flag(slot: &mut Option<Span>, meta: &ParseNestedMeta<'_>, key: &str) -> syn::Result<()> {
    once(slot, meta, key)?;
    if meta.input.peek(Token![=]) || meta.input.peek(syn::token::Paren) {
        return Err(syn::Error::new_spanned(
            &meta.path,
            format!("`{key}` takes no value: write `#[config({key})]`"),
        ));
    }
    *slot = Some(meta.path.span());
    Ok(())
}

/// `min = EXPR` / `max = EXPR`.
fn bound(slot: &mut Option<Bound>, meta: &ParseNestedMeta<'_>, key: &str) -> syn::Result<()> {
    once(slot, meta, key)?;
    if !meta.input.peek(Token![=]) {
        return Err(syn::Error::new_spanned(
            &meta.path,
            format!("`{key}` needs a value: write `#[config({key} = EXPR)]`"),
        ));
    }
    let expr: Expr = meta.value()?.parse()?;
    *slot = Some(Bound {
        span: meta.path.span(),
        expr,
    });
    Ok(())
}

/// `validate = path::to_fn`.
fn function(slot: &mut Option<ExprPath>, meta: &ParseNestedMeta<'_>) -> syn::Result<()> {
    once(slot, meta, "validate")?;
    if !meta.input.peek(Token![=]) {
        return Err(syn::Error::new_spanned(
            &meta.path,
            "`validate` needs a function: write `#[config(validate = path::to_fn)]`",
        ));
    }
    let value = meta.value()?;
    if value.peek(syn::LitStr) {
        let lit: syn::LitStr = value.parse()?;
        return Err(syn::Error::new(
            lit.span(),
            "expected a path to a function, not a string: write `validate = path::to_fn`",
        ));
    }
    let expr: Expr = value.parse()?;
    match expr {
        Expr::Path(path) => {
            *slot = Some(path);
            Ok(())
        }
        other => Err(syn::Error::new_spanned(
            other,
            "expected a path to a function: write `validate = path::to_fn`",
        )),
    }
}

/// Parses the `#[config(...)]` attributes of the struct.
pub(crate) fn parse_struct(attrs: &[Attribute]) -> syn::Result<StructAttrs> {
    let mut out = StructAttrs::default();
    for_each_key(attrs, |meta| match key_ident(&meta.path).as_deref() {
        Some("validate") => function(&mut out.validate, &meta),
        Some("crate") => {
            once(&out.krate, &meta, "crate")?;
            if !meta.input.peek(Token![=]) {
                return Err(syn::Error::new_spanned(
                    &meta.path,
                    "`crate` needs a path: write `#[config(crate = path::to::nebula_resource)]`",
                ));
            }
            out.krate = Some(meta.value()?.call(Path::parse_mod_style)?);
            Ok(())
        }
        Some(key @ ("non_empty" | "min" | "max" | "nested" | "secret")) => {
            Err(syn::Error::new_spanned(
                &meta.path,
                format!(
                    "`{key}` is a field attribute; on the struct, `#[config(...)]` accepts {STRUCT_KEYS}"
                ),
            ))
        }
        _ => Err(syn::Error::new_spanned(
            &meta.path,
            format!(
                "unknown `config` attribute `{}` on the struct; expected one of {STRUCT_KEYS}",
                key_name(&meta.path)
            ),
        )),
    })?;
    Ok(out)
}

/// Parses (and merges) the `#[config(...)]` attributes of one field.
pub(crate) fn parse_field(attrs: &[Attribute]) -> syn::Result<FieldAttrs> {
    let mut out = FieldAttrs::default();
    for_each_key(attrs, |meta| match key_ident(&meta.path).as_deref() {
        Some("non_empty") => flag(&mut out.non_empty, &meta, "non_empty"),
        Some("nested") => flag(&mut out.nested, &meta, "nested"),
        Some("secret") => flag(&mut out.secret, &meta, "secret"),
        Some("min") => bound(&mut out.min, &meta, "min"),
        Some("max") => bound(&mut out.max, &meta, "max"),
        Some("validate") => function(&mut out.validate, &meta),
        Some("crate") => Err(syn::Error::new_spanned(
            &meta.path,
            format!(
                "`crate` is a struct attribute; on a field, `#[config(...)]` accepts {FIELD_KEYS}"
            ),
        )),
        _ => Err(syn::Error::new_spanned(
            &meta.path,
            format!(
                "unknown `config` attribute `{}` on a field; expected one of {FIELD_KEYS}",
                key_name(&meta.path)
            ),
        )),
    })?;
    Ok(out)
}
