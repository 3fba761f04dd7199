//! Code generation for `#[derive(Config)]`.

use std::collections::HashSet;

use proc_macro2::{Ident, Span, TokenStream, TokenTree};
use quote::{ToTokens, quote, quote_spanned};
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::{
    Data, DeriveInput, Fields, GenericArgument, LitStr, PathArguments, Type, WherePredicate,
    parse_quote,
};

use crate::attrs::{self, Bound, FieldAttrs};

/// Expands the derive, or returns the (combined) errors to report.
pub(crate) fn derive(input: &DeriveInput) -> syn::Result<TokenStream> {
    let fields = match &input.data {
        Data::Struct(data) => match &data.fields {
            Fields::Named(named) => named.named.iter().collect::<Vec<_>>(),
            Fields::Unit => Vec::new(),
            Fields::Unnamed(unnamed) => {
                return Err(syn::Error::new_spanned(
                    unnamed,
                    "`#[derive(Config)]` supports only structs with named fields, not tuple structs",
                ));
            }
        },
        Data::Enum(data) => {
            return Err(syn::Error::new_spanned(
                data.enum_token,
                "`#[derive(Config)]` supports only structs with named fields, not enums; \
                 implement `nebula_resource::Config` by hand",
            ));
        }
        Data::Union(data) => {
            return Err(syn::Error::new_spanned(
                data.union_token,
                "`#[derive(Config)]` supports only structs with named fields, not unions",
            ));
        }
    };

    let mut errors: Option<syn::Error> = None;
    let mut push_error = |err: syn::Error| match &mut errors {
        Some(all) => all.combine(err),
        None => errors = Some(err),
    };

    let struct_attrs = attrs::parse_struct(&input.attrs).unwrap_or_else(|err| {
        push_error(err);
        attrs::StructAttrs::default()
    });
    let krate = struct_attrs
        .krate
        .as_ref()
        .map_or_else(|| quote!(::nebula_resource), ToTokens::to_token_stream);

    let type_params: HashSet<String> = input
        .generics
        .type_params()
        .map(|p| p.ident.to_string())
        .collect();
    let mut predicates: Vec<WherePredicate> = Vec::new();
    let mut checks = Vec::new();

    for field in fields {
        let field_attrs = match attrs::parse_field(&field.attrs) {
            Ok(parsed) => parsed,
            Err(err) => {
                push_error(err);
                continue;
            }
        };
        // Named fields always have an identifier; a field without one is skipped, not unwrapped.
        let Some(ident) = &field.ident else { continue };
        if !field_attrs.has_checks() {
            continue;
        }
        let field = FieldInfo {
            ident,
            name: LitStr::new(&ident.unraw().to_string(), ident.span()),
            inner: option_inner(&field.ty),
            ty: &field.ty,
            attrs: &field_attrs,
        };
        if mentions_any(field.value_ty().to_token_stream(), &type_params) {
            predicates.extend(field.bounds(&krate));
        }
        checks.push(field.checks(&krate));
    }

    if let Some(err) = errors {
        return Err(err);
    }

    let struct_check = struct_attrs.validate.map(|path| {
        quote_spanned! {path.span()=>
            if let ::core::result::Result::Err(__err) = #path(self) {
                return ::core::result::Result::Err(__err);
            }
        }
    });

    let mut generics = input.generics.clone();
    if !generics.params.is_empty() {
        let where_clause = generics.make_where_clause();
        where_clause.predicates.push(parse_quote!(
            Self: ::core::clone::Clone + ::core::marker::Send + ::core::marker::Sync + 'static
        ));
        where_clause.predicates.extend(predicates);
    }
    let (impl_generics, ty_generics, where_clause) = generics.split_for_impl();
    let name = &input.ident;

    Ok(quote! {
        #[automatically_derived]
        impl #impl_generics #krate::Config for #name #ty_generics #where_clause {
            fn validate(&self) -> ::core::result::Result<(), #krate::Error> {
                #(#checks)*
                #struct_check
                ::core::result::Result::Ok(())
            }
        }
    })
}

/// One field with checks, and what is needed to generate them.
struct FieldInfo<'a> {
    ident: &'a Ident,
    /// The field name as reported by `Error::field` (`r#type` is reported as `type`).
    name: LitStr,
    /// `T` when the field is an `Option<T>`.
    inner: Option<&'a Type>,
    ty: &'a Type,
    attrs: &'a FieldAttrs,
}

impl FieldInfo<'_> {
    /// The type the value checks see: `T` for an `Option<T>` field, else the field's type.
    fn value_ty(&self) -> &Type {
        self.inner.unwrap_or(self.ty)
    }

    /// Bounds a generic field type needs for its checks.
    fn bounds(&self, krate: &TokenStream) -> Vec<WherePredicate> {
        let ty = self.value_ty();
        let mut out = Vec::new();
        if self.attrs.min.is_some() || self.attrs.max.is_some() {
            out.push(parse_quote!(#ty: ::core::cmp::PartialOrd + ::core::fmt::Debug));
        }
        if self.attrs.nested.is_some() {
            out.push(parse_quote!(#ty: #krate::Config));
        }
        out
    }

    /// Runs `check` with `__value: &T` bound to the field (or to its content when `Some`).
    fn on_value(&self, check: TokenStream) -> TokenStream {
        let ident = self.ident;
        let value = value_ident(ident.span());
        if self.inner.is_some() {
            quote! {
                if let ::core::option::Option::Some(#value) = &self.#ident {
                    #check
                }
            }
        } else {
            quote! {
                {
                    let #value = &self.#ident;
                    #check
                }
            }
        }
    }

    /// All checks of this field, in their documented order.
    fn checks(&self, krate: &TokenStream) -> TokenStream {
        let name = &self.name;
        let mut out = TokenStream::new();

        if let Some(span) = self.attrs.non_empty {
            let value = value_ident(span);
            out.extend(self.on_value(quote_spanned! {span=>
                if #value.is_empty() {
                    return ::core::result::Result::Err(
                        #krate::Error::config(#name, "must not be empty"),
                    );
                }
            }));
        }
        if let Some(bound) = &self.attrs.min {
            out.extend(self.on_value(self.bound_check(krate, bound, true)));
        }
        if let Some(bound) = &self.attrs.max {
            out.extend(self.on_value(self.bound_check(krate, bound, false)));
        }
        if let Some(path) = &self.attrs.validate {
            let ident = self.ident;
            out.extend(quote_spanned! {path.span()=>
                if let ::core::result::Result::Err(__msg) = #path(&self.#ident) {
                    return ::core::result::Result::Err(#krate::Error::config(#name, __msg));
                }
            });
        }
        if let Some(span) = self.attrs.nested {
            // Located at `nested`, so "`T: Config` is not satisfied" points at the attribute.
            let krate = respan(krate.clone(), span);
            let value = value_ident(span);
            // A call-site local as the argument, for the same reason (no user code is in scope).
            out.extend(self.on_value(quote_spanned! {span=>
                let __nested = #value;
                if let ::core::result::Result::Err(__err) = #krate::Config::validate(__nested) {
                    return ::core::result::Result::Err(__err);
                }
            }));
        }
        out
    }

    /// `min` (`is_min`) or `max`: values that do not compare (NaN) fail too.
    fn bound_check(&self, krate: &TokenStream, bound: &Bound, is_min: bool) -> TokenStream {
        let name = &self.name;
        let value = value_ident(bound.span);
        let limit = Ident::new("__bound", Span::mixed_site().located_at(bound.span));
        let ty = self.value_ty();
        let expr = &bound.expr;
        let (compare, rule) = if is_min {
            (quote!(ge), "must be at least")
        } else {
            (quote!(le), "must be at most")
        };
        let message = if self.attrs.secret.is_some() {
            let format = LitStr::new(&format!("{rule} {{:?}}"), bound.span);
            quote_spanned! {bound.span=> ::std::format!(#format, #limit) }
        } else {
            let format = LitStr::new(&format!("{rule} {{:?}} (got {{:?}})"), bound.span);
            quote_spanned! {bound.span=> ::std::format!(#format, #limit, #value) }
        };
        quote_spanned! {bound.span=>
            let #limit: #ty = #expr;
            if !::core::cmp::PartialOrd::#compare(#value, &#limit) {
                return ::core::result::Result::Err(#krate::Error::config(#name, #message));
            }
        }
    }
}

/// The local bound to the value being checked, located at `span` (so that type errors point
/// there). Mixed-site hygiene, so it cannot clash with names in user expressions.
fn value_ident(span: Span) -> Ident {
    Ident::new("__value", Span::mixed_site().located_at(span))
}

/// `T` if `ty` is spelled `Option<T>`, `std::option::Option<T>` or `core::option::Option<T>`.
///
/// The detection is syntactic: a type alias of an `Option` is treated as a plain value.
fn option_inner(ty: &Type) -> Option<&Type> {
    let ty = match ty {
        Type::Group(group) => &*group.elem,
        Type::Paren(paren) => &*paren.elem,
        other => other,
    };
    let Type::Path(path) = ty else { return None };
    if path.qself.is_some() {
        return None;
    }
    let segments: Vec<_> = path.path.segments.iter().collect();
    let (last, prefix) = segments.split_last()?;
    let prefix: Vec<String> = prefix.iter().map(|s| s.ident.to_string()).collect();
    let prefix_ok = match prefix.as_slice() {
        [] => path.path.leading_colon.is_none(),
        [root, module] => (root == "std" || root == "core") && module == "option",
        _ => false,
    };
    if !prefix_ok || last.ident != "Option" {
        return None;
    }
    let PathArguments::AngleBracketed(args) = &last.arguments else {
        return None;
    };
    if args.args.len() != 1 {
        return None;
    }
    match args.args.first() {
        Some(GenericArgument::Type(inner)) => Some(inner),
        _ => None,
    }
}

/// Whether `tokens` mention one of the struct's type parameters (then the field's checks need
/// bounds on it in the impl's where-clause).
fn mentions_any(tokens: TokenStream, names: &HashSet<String>) -> bool {
    if names.is_empty() {
        return false;
    }
    tokens.into_iter().any(|tree| match tree {
        TokenTree::Ident(ident) => names.contains(&ident.to_string()),
        TokenTree::Group(group) => mentions_any(group.stream(), names),
        TokenTree::Punct(_) | TokenTree::Literal(_) => false,
    })
}

/// `tokens` with every token located at `span`.
fn respan(tokens: TokenStream, span: Span) -> TokenStream {
    tokens
        .into_iter()
        .map(|mut tree| {
            if let TokenTree::Group(group) = &tree {
                let mut inner =
                    proc_macro2::Group::new(group.delimiter(), respan(group.stream(), span));
                inner.set_span(span);
                tree = TokenTree::Group(inner);
            } else {
                tree.set_span(span);
            }
            tree
        })
        .collect()
}
