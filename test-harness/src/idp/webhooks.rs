//! `POST /webhooks/<name>`: a webhook sink. Every body is kept (JSON, or a JSON string when
//! the body is not JSON) before any fault applies, and a normal answer is `204`.

use serde_json::Value;

use super::TestIdp;

/// Received bodies, oldest first, with the sink's name.
#[derive(Default)]
pub(super) struct Webhooks(Vec<(String, Value)>);

impl Webhooks {
    /// Keeps a body received by sink `name`.
    pub(super) fn record(&mut self, name: &str, body: &[u8]) {
        let body =
            serde_json::from_slice(body).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()));
        self.0.push((name.to_string(), body));
    }
}

impl TestIdp {
    /// Bodies received by `/webhooks/<name>`, oldest first: JSON, or a string when the body
    /// is not JSON. Every received body is kept, whatever the endpoint's behavior.
    pub fn webhook_bodies(&self, name: &str) -> Vec<Value> {
        self.shared.lock().webhooks.0.iter().filter(|(n, _)| n == name).map(|(_, body)| body.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::http;
    use crate::idp::Endpoint;

    #[test]
    fn webhook_sink() {
        let idp = TestIdp::start();
        let url = idp.url("/webhooks/audit");
        let r = http::post(&url, &[("content-type", "application/json")], br#"{"e":1}"#).unwrap();
        assert_eq!((r.status, r.body.len()), (204, 0));
        http::post(&url, &[], b"plain").unwrap();
        http::post(&idp.url("/webhooks/other"), &[], b"{}").unwrap();
        assert_eq!(idp.webhook_bodies("audit"), vec![json!({"e": 1}), json!("plain")]);
        assert_eq!(idp.hits(Endpoint::Webhook("audit".into())), 2);
    }
}
