//! ModSecurity operators and transformations for Palisade's WAF, as pure functions over bytes.
//!
//! This crate is the `@operator` / `t:transformation` layer of the SecLang engine (`palisade-waf`): it
//! compiles an operator from the text of a rule once ([`Operator::parse`]) and matches values against it,
//! and it applies transformations ([`Transform::apply`]) with ModSecurity v2's exact byte-level algorithms
//! (`apache2/re_tfns.c`, `msc_util.c`, `re_operators.c`). It knows nothing of rules, variables, phases or
//! HTTP; macro expansion (`%{tx.foo}`) is delegated to the engine through [`MacroEnv`].
//!
//! Values are bytes everywhere: `@rx` has PCRE's non-UTF semantics (ASCII classes, `.` matches any byte),
//! case-insensitive comparisons are ASCII-only. Hostile input never panics.

mod literals;
mod operator;
mod rx;
mod transform;

pub use operator::{has_any_byte, MacroEnv, Operator};
pub use rx::RxSet;
pub use transform::Transform;

#[cfg(test)]
mod tests;
