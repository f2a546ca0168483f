//! Callouts as data: what the core wants fetched, and the reply the host hands back.
//! The host turns a [`Callout`] into `dispatch_http_call` (which takes an Envoy *cluster
//! name* and needs `:method`, `:path` and `:authority`); a failed callout (reset, timeout,
//! no healthy host) arrives with no `:status`, which [`Reply::status`] reports as `None`.

/// An HTTP request to send through an Envoy cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Callout {
    pub cluster: String,
    pub method: String,
    pub authority: String,
    pub path: String,
    /// Extra headers (never pseudo-headers).
    pub headers: Vec<(String, String)>,
    pub body: Option<Vec<u8>>,
    pub timeout_ms: u64,
}

impl Callout {
    /// A GET with an `accept` header.
    pub fn get(cluster: &str, authority: &str, path: &str, accept: &str, timeout_ms: u64) -> Self {
        Callout {
            cluster: cluster.into(),
            method: "GET".into(),
            authority: authority.into(),
            path: path.into(),
            headers: vec![("accept".into(), accept.into())],
            body: None,
            timeout_ms,
        }
    }
}

/// The answer to a callout.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reply {
    /// `None` when the callout failed without a response.
    pub status: Option<u16>,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    /// The first value of a (lower-case) header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// The largest callout answer read into memory (key sets, discovery documents).
pub const MAX_REPLY_BYTES: usize = 512 * 1024;
