//! Header changes for an allowed request: owned-header stripping, credential removal.

use super::*;

/// Removes every inbound header Portcullis owns.
pub(crate) fn base_mutations(cfg: &Config, req: &RequestView) -> Mutations {
    // Only headers the request actually carries: every removal is a host call.
    let mut remove: Vec<String> = Vec::new();
    for (name, _) in &req.headers {
        let owned = name.starts_with(config::OWNED_PREFIX) || cfg.owned_headers.iter().any(|h| h == name);
        if owned && !remove.contains(name) {
            remove.push(name.clone());
        }
    }
    Mutations { remove, ..Mutations::default() }
}

pub(super) fn strip_credential(source: &Source, m: &mut Mutations, path: &mut String, req: &RequestView) {
    match source {
        Source::Header { name, .. } => {
            if !m.remove.contains(name) {
                m.remove.push(name.clone());
            }
        }
        Source::Param(name) => *path = request::remove_query_param(path, name),
        Source::Cookie(name) => {
            let joined: Vec<&str> = req.header_values("cookie").flatten().collect();
            m.remove.push("cookie".into());
            if let Some(rest) = request::remove_cookie(&joined.join("; "), name) {
                m.set.push(("cookie".into(), rest));
            }
        }
    }
}
