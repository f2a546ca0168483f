//! Plugin configuration (SPEC §2), in two phases:
//!
//! 1. **Shape**: serde types (`Raw…`, `deny_unknown_fields`) read the JSON. Type errors and
//!    unknown fields are reported with their field path by `serde_path_to_error`.
//! 2. **Meaning**: [`validate`] turns the raw types into the validated [`Config`] the rest of
//!    the filter uses, checking every cross-reference (plans, providers named by routes),
//!    parsing durations, hashes and inline key sets, and resolving secrets from VM environment
//!    variables. Every [`ConfigError`] names the field path and the problem, e.g.
//!    `providers.corp.audiences[0]: must not be empty`.
//!
//! Nothing here touches the host: environment variables come in through a lookup function.

pub mod duration;

use std::fmt;

/// A configuration error: the field path (`providers.corp.audiences[0]`) and the problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Dotted path of the offending field; empty for the document itself.
    pub path: String,
    /// What is wrong, in words an operator can act on.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

fn err<T>(path: impl Into<String>, message: impl Into<String>) -> Result<T, ConfigError> {
    Err(ConfigError { path: path.into(), message: message.into() })
}

mod capabilities;
mod events;
mod fields;
pub mod intro;
pub mod route;
mod schema;
mod types;
mod validate;

pub use fields::{parse_rfc3339, split_url};
pub use types::*;

use capabilities::*;
use fields::*;
use schema::*;
use validate::*;

pub(crate) const RESERVED_METHOD_NAMES: [&str; 4] = ["api_key", "introspection", "mtls", "none"];

/// Parses and validates a configuration document. `env` resolves VM environment variables
/// (Envoy `vm_config.environment_variables`, Istio `vmConfig.env`).
pub fn parse(json: &[u8], env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
    let text = std::str::from_utf8(json)
        .map_err(|_| ConfigError { path: String::new(), message: "configuration is not UTF-8".into() })?;
    if text.trim().is_empty() {
        return err("", "configuration is empty: give a JSON object (see README)");
    }
    let mut de = serde_json::Deserializer::from_str(text);
    let raw: RawConfig = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            // The line and column locate a syntax error; the path would only say "?".
            return ConfigError { path: String::new(), message: format!("configuration is not valid JSON: {inner}") };
        }
        let path = if path == "." { String::new() } else { path };
        let message = operator_message(&strip_position(&inner.to_string()));
        if path.is_empty() && message == "must be a JSON object" {
            return ConfigError { path, message: "configuration must be a JSON object".into() };
        }
        ConfigError { path, message }
    })?;
    de.end()
        .map_err(|e| ConfigError { path: String::new(), message: format!("configuration is not valid JSON: {e}") })?;
    validate(raw, env)
}

/// Rewrites serde messages that would expose internal type names.
pub(crate) fn operator_message(m: &str) -> String {
    if m.contains("untagged enum RawRequires") {
        return "must be \"none\" or an object {\"any\": [...]} or {\"all\": [...]} listing credential method names"
            .into();
    }
    if m.contains("expected struct Raw") {
        return "must be a JSON object".into();
    }
    m.to_string()
}

/// serde_json appends " at line L column C"; the path already says where.
pub(crate) fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

#[cfg(test)]
mod tests;
