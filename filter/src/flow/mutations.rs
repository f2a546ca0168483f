//! Header changes for an allowed request: owned-header stripping, credential removal.

use super::*;

/// True when `name` (lower case) is a header Portcullis owns, compared after folding `_` to
/// `-`: CGI, WSGI and Rack map both to the same variable, so `x_portcullis_client` must go too.
pub(crate) fn is_owned(cfg: &Config, name: &str) -> bool {
    let folded;
    let name = if name.contains('_') {
        folded = name.replace('_', "-");
        folded.as_str()
    } else {
        name
    };
    name.starts_with(config::OWNED_PREFIX) || cfg.owned_headers.iter().any(|h| h == name)
}

/// The changes every request that goes on gets, whatever its route or outcome: every inbound
/// header Portcullis owns removed, and `:path` set to the canonical path when the request's
/// differed ([`RequestView::rewritten`]).
pub(crate) fn base_mutations(cfg: &Config, req: &RequestView) -> Mutations {
    // Only headers the request actually carries: every removal is a host call.
    let mut remove: Vec<String> = Vec::new();
    for (name, _) in req.headers.iter() {
        if is_owned(cfg, name) && !remove.iter().any(|r| r == name) {
            remove.push(name.to_string());
        }
    }
    let path = req.rewritten.then(|| req.path.clone());
    Mutations { remove, path, ..Mutations::default() }
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
