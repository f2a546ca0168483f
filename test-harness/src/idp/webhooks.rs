//! `POST /webhooks/<name>`: a webhook sink. Every request is kept — its headers, its raw body
//! text and the body as JSON (or a JSON string when the body is not JSON) — before any fault
//! applies, and a normal answer is `204`. Make it stall or fail with
//! [`TestIdp::set_behavior`] on `Endpoint::Webhook(name)`: what it received is still kept.

use std::time::Instant;

use serde_json::Value;

use super::TestIdp;

/// One request received by a webhook sink.
#[derive(Debug, Clone)]
pub struct WebhookRequest {
    /// When it arrived.
    pub at: Instant,
    /// Header fields in received order; names are lowercased.
    pub headers: Vec<(String, String)>,
    /// The body as received (invalid UTF-8 replaced).
    pub text: String,
    /// The body as JSON, or a JSON string when it is not JSON.
    pub body: Value,
}

impl WebhookRequest {
    /// First value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// Received requests, oldest first, with the sink's name.
#[derive(Default)]
pub(super) struct Webhooks(Vec<(String, WebhookRequest)>);

impl Webhooks {
    /// Keeps a request received by sink `name`.
    pub(super) fn record(&mut self, name: &str, headers: &[(String, String)], body: &[u8]) {
        let text = String::from_utf8_lossy(body).into_owned();
        let json = serde_json::from_slice(body).unwrap_or_else(|_| Value::String(text.clone()));
        let request = WebhookRequest { at: Instant::now(), headers: headers.to_vec(), text, body: json };
        self.0.push((name.to_string(), request));
    }
}

impl TestIdp {
    /// Bodies received by `/webhooks/<name>`, oldest first: JSON, or a string when the body
    /// is not JSON. Every received body is kept, whatever the endpoint's behavior.
    pub fn webhook_bodies(&self, name: &str) -> Vec<Value> {
        self.webhook_requests(name).into_iter().map(|r| r.body).collect()
    }

    /// Requests received by `/webhooks/<name>` (headers, raw text, JSON), oldest first.
    pub fn webhook_requests(&self, name: &str) -> Vec<WebhookRequest> {
        self.shared.lock().webhooks.0.iter().filter(|(n, _)| n == name).map(|(_, r)| r.clone()).collect()
    }

    /// Forgets what `/webhooks/<name>` received so far.
    pub fn clear_webhook(&self, name: &str) {
        self.shared.lock().webhooks.0.retain(|(n, _)| n != name);
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
        let r = http::post(&url, &[("content-type", "application/json"), ("x-token", "t")], br#"{"e":1}"#).unwrap();
        assert_eq!((r.status, r.body.len()), (204, 0));
        http::post(&url, &[], b"plain").unwrap();
        http::post(&idp.url("/webhooks/other"), &[], b"{}").unwrap();
        assert_eq!(idp.webhook_bodies("audit"), vec![json!({"e": 1}), json!("plain")]);
        let requests = idp.webhook_requests("audit");
        assert_eq!((requests[0].header("X-Token"), requests[0].text.as_str()), (Some("t"), r#"{"e":1}"#));
        assert_eq!(idp.hits(Endpoint::Webhook("audit".into())), 2);
        idp.clear_webhook("audit");
        assert!(idp.webhook_bodies("audit").is_empty());
        assert_eq!(idp.webhook_bodies("other").len(), 1);
    }
}
