//! Phase 1: the JSON shape. Every raw serde type of the configuration, `deny_unknown_fields`;
//! [`super::validate`] turns them into the validated types of [`super::types`].

use std::collections::BTreeMap;

use serde::Deserialize;

// ---------------------------------------------------------------------------------------------
// Phase 1: the JSON shape.
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    #[cfg_attr(feature = "schema", schemars(extend("enum" = ["enforce", "shadow", null])))]
    pub(crate) mode: Option<String>,
    pub(crate) realm: Option<String>,
    pub(crate) stats_instance: Option<String>,
    #[serde(default)]
    pub(crate) providers: BTreeMap<String, RawProvider>,
    pub(crate) api_keys: Option<RawApiKeys>,
    pub(crate) introspection: Option<RawIntrospection>,
    pub(crate) password_grant: Option<RawPasswordGrant>,
    pub(crate) rate_limit: Option<RawRateLimit>,
    #[serde(default)]
    pub(crate) routes: Vec<RawRoute>,
    pub(crate) requires: Option<RawRequires>,
    pub(crate) events: Option<RawEvents>,
    #[cfg_attr(feature = "schema", schemars(extend("enum" = ["fail_closed", "anonymous", null])))]
    pub(crate) on_dependency_down: Option<String>,
    #[cfg_attr(feature = "schema", schemars(extend("enum" = ["auto", "pure", null])))]
    pub(crate) crypto: Option<String>,
    pub(crate) verified_token_cache_size: Option<u64>,
    #[serde(default)]
    pub(crate) bypass_cors_preflight: bool,
    #[serde(default)]
    pub(crate) rules: Vec<RawRule>,
    pub(crate) revocation: Option<RawRevocation>,
}

/// A trigger rule.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRule {
    pub(crate) name: String,
    pub(crate) on: RawRuleOn,
    pub(crate) key: String,
    pub(crate) threshold: Option<u32>,
    pub(crate) distinct: Option<String>,
    pub(crate) anomaly: Option<RawAnomaly>,
    pub(crate) window: Duration,
    pub(crate) actions: Vec<RawRuleAction>,
}

#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRuleOn {
    pub(crate) kind: String,
    #[serde(default)]
    pub(crate) reasons: Vec<String>,
    #[serde(default)]
    pub(crate) routes: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAnomaly {
    pub(crate) factor: f64,
    pub(crate) baseline: Duration,
    pub(crate) min_events: u32,
}

#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRuleAction {
    pub(crate) alert: Option<String>,
    pub(crate) block: Option<Duration>,
    pub(crate) revoke: Option<Duration>,
}

/// `revocation`: the list to poll.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRevocation {
    pub(crate) endpoint: RawEndpoint,
    pub(crate) poll_interval: Option<Duration>,
    pub(crate) max_entries: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub(crate) struct RawProvider {
    pub(crate) issuer: Option<String>,
    #[serde(default)]
    pub(crate) audiences: Vec<String>,
    pub(crate) remote_jwks: Option<RawRemoteJwks>,
    pub(crate) local_jwks: Option<RawLocalJwks>,
    pub(crate) discovery: Option<RawDiscovery>,
    pub(crate) from_headers: Option<Vec<RawHeaderSource>>,
    #[serde(default)]
    pub(crate) from_params: Vec<String>,
    #[serde(default)]
    pub(crate) from_cookies: Vec<String>,
    #[serde(default)]
    pub(crate) forward: bool,
    pub(crate) forward_payload_header: Option<String>,
    #[serde(default)]
    pub(crate) claim_to_headers: Vec<RawClaimToHeader>,
    pub(crate) claim_separator: Option<String>,
    pub(crate) clock_skew_seconds: Option<u64>,
    pub(crate) max_lifetime: Option<Duration>,
    pub(crate) require_expiration: Option<bool>,
    pub(crate) max_token_bytes: Option<u64>,
    pub(crate) client_id_claim: Option<String>,
    pub(crate) payload_in_metadata: Option<String>,
    pub(crate) payload_in_filter_state: Option<String>,
    pub(crate) subjects: Option<RawStringMatcher>,
    pub(crate) jwt_cache_config: Option<RawJwtCacheConfig>,
    pub(crate) normalize_payload_in_metadata: Option<RawNormalizePayload>,
    #[serde(default)]
    pub(crate) pad_forward_payload_header: bool,
    pub(crate) header_in_metadata: Option<serde_json::Value>,
    pub(crate) failed_status_in_metadata: Option<serde_json::Value>,
    pub(crate) hmac_secret: Option<String>,
    pub(crate) hmac_secret_env: Option<String>,
    pub(crate) allowed_typ: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHttpUri {
    pub(crate) uri: String,
    pub(crate) cluster: String,
    pub(crate) timeout: Option<Duration>,
}

#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRemoteJwks {
    pub(crate) http_uri: RawHttpUri,
    pub(crate) cache_duration: Option<Duration>,
    pub(crate) max_stale: Option<Duration>,
    pub(crate) unknown_kid_refresh_interval: Option<Duration>,
    /// Accepted for migration from jwt_authn: background fetching is what Portcullis does.
    #[allow(dead_code)]
    pub(crate) async_fetch: Option<serde_json::Value>,
    pub(crate) retry_policy: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLocalJwks {
    pub(crate) inline_string: Option<String>,
    pub(crate) inline_string_env: Option<String>,
    pub(crate) filename: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDiscovery {
    pub(crate) cluster: String,
    pub(crate) timeout: Option<Duration>,
    pub(crate) cache_duration: Option<Duration>,
}

#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHeaderSource {
    pub(crate) name: String,
    pub(crate) value_prefix: Option<String>,
}

#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub(crate) struct RawClaimToHeader {
    pub(crate) header_name: String,
    pub(crate) claim_name: String,
}

#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub(crate) struct RawApiKeys {
    #[serde(default)]
    pub(crate) from_headers: Vec<String>,
    #[serde(default)]
    pub(crate) from_params: Vec<String>,
    #[serde(default)]
    pub(crate) hide_credentials: bool,
    #[serde(default)]
    pub(crate) clients: Vec<RawApiClient>,
}

#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub(crate) struct RawApiClient {
    pub(crate) client_id: String,
    pub(crate) keys_sha256: KeyHashes,
    pub(crate) plan: Option<String>,
    #[serde(default)]
    pub(crate) scopes: Vec<String>,
    #[serde(default)]
    pub(crate) disabled: bool,
}

/// `keys_sha256`, decoded while the configuration is read: a hex string per key would add
/// ~100 bytes a key to every VM's memory high-water mark (10,000 keys: 1 MiB per VM). `None`
/// marks an entry that is not 64 hex characters; validation refuses it with its path. The
/// JSON shape (and schema) is an array of strings.
#[derive(Debug, Default)]
pub(crate) struct KeyHashes(pub(crate) Vec<Option<[u8; 32]>>);

impl<'de> Deserialize<'de> for KeyHashes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = KeyHashes;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a sequence")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<KeyHashes, A::Error> {
                let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(1).min(64));
                while let Some(hex) = seq.next_element::<String>()? {
                    out.push(super::fields::parse_sha256_hex(&hex));
                }
                Ok(KeyHashes(out))
            }
        }
        d.deserialize_seq(V)
    }
}

#[cfg(feature = "schema")]
impl schemars::JsonSchema for KeyHashes {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        <Vec<String>>::schema_name()
    }

    fn inline_schema() -> bool {
        <Vec<String>>::inline_schema()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        <Vec<String>>::json_schema(generator)
    }
}

#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub(crate) struct RawEndpoint {
    pub(crate) cluster: String,
    pub(crate) authority: String,
    pub(crate) path: String,
    pub(crate) timeout: Option<Duration>,
}

#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub(crate) struct RawIntrospection {
    pub(crate) endpoint: RawEndpoint,
    pub(crate) client_id: String,
    pub(crate) client_secret: Option<String>,
    pub(crate) client_secret_env: Option<String>,
    pub(crate) accept_jwt: Option<bool>,
    #[serde(default)]
    pub(crate) introspect_jwts: bool,
    pub(crate) response_format: Option<String>,
    pub(crate) from_headers: Option<Vec<RawHeaderSource>>,
    pub(crate) upstream_header: Option<RawHeaderSource>,
    #[serde(default)]
    pub(crate) claim_to_headers: Vec<RawClaimToHeader>,
    pub(crate) cache_duration: Option<Duration>,
    pub(crate) negative_cache_duration: Option<Duration>,
    pub(crate) claims_header: Option<String>,
    pub(crate) verify_with: Option<String>,
    pub(crate) opaque_prefix: Option<String>,
    pub(crate) cache_slots: Option<u64>,
    pub(crate) max_token_bytes: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPasswordGrant {
    pub(crate) token_path: String,
    pub(crate) identities: Vec<RawIdentity>,
    #[cfg_attr(feature = "schema", schemars(extend("enum" = ["issue", "forward"])))]
    pub(crate) mode: String,
    pub(crate) issue: Option<RawIssue>,
    pub(crate) forward: Option<RawForwardHeaders>,
    pub(crate) lockout: Option<RawLockout>,
    pub(crate) max_body_bytes: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub(crate) struct RawIdentity {
    pub(crate) name: String,
    pub(crate) cluster: String,
    pub(crate) authority: String,
    pub(crate) path: String,
    pub(crate) timeout: Option<Duration>,
    pub(crate) registered_at: String,
}

#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub(crate) struct RawIssue {
    pub(crate) issuer: String,
    #[serde(default)]
    pub(crate) audiences: Vec<String>,
    pub(crate) lifetime: Option<Duration>,
    pub(crate) algorithm: String,
    pub(crate) signing_key_pem: Option<String>,
    pub(crate) signing_key_pem_env: Option<String>,
    pub(crate) kid: String,
    pub(crate) jwks_path: Option<String>,
}

#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub(crate) struct RawForwardHeaders {
    pub(crate) identity_header: Option<String>,
    pub(crate) extra_info_header: Option<String>,
    pub(crate) token_endpoint: Option<RawEndpoint>,
    #[serde(default)]
    pub(crate) hold_headers: bool,
}

#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLockout {
    pub(crate) max_failures: u64,
    pub(crate) window: Duration,
    pub(crate) block: Duration,
    pub(crate) max_subjects: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRateLimit {
    #[serde(default)]
    pub(crate) plans: BTreeMap<String, RawPlan>,
    pub(crate) default_plan: Option<String>,
    pub(crate) max_clients: Option<u64>,
    #[serde(default)]
    pub(crate) headers: bool,
    pub(crate) plan_claim: Option<String>,
}

#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPlan {
    pub(crate) requests: u64,
    pub(crate) per: Duration,
    pub(crate) burst: Option<u64>,
    pub(crate) global: Option<RawGlobal>,
}

#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub(crate) struct RawGlobal {
    pub(crate) cluster: String,
    pub(crate) domain: String,
    pub(crate) timeout: Option<Duration>,
}

#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRoute {
    pub(crate) name: Option<String>,
    #[cfg_attr(feature = "schema", schemars(extend("enum" = ["enforce", "shadow", null])))]
    pub(crate) mode: Option<String>,
    #[serde(rename = "match")]
    pub(crate) matcher: RawMatch,
    pub(crate) requires: Option<RawRequires>,
    #[serde(default)]
    pub(crate) scopes: Vec<String>,
    pub(crate) plan: Option<String>,
    pub(crate) cost: Option<u64>,
    pub(crate) allowed_clients: Option<Vec<String>>,
    #[serde(default)]
    pub(crate) when: Vec<RawCondition>,
    #[serde(default)]
    pub(crate) require_bound_token: bool,
}

/// A `when` condition (Istio `AuthorizationPolicy` style).
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCondition {
    pub(crate) key: String,
    pub(crate) values: Option<Vec<String>>,
    #[serde(rename = "notValues")]
    pub(crate) not_values: Option<Vec<String>>,
}

/// A `match.headers` entry.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHeaderMatch {
    pub(crate) name: String,
    pub(crate) values: Option<Vec<String>>,
    #[serde(rename = "notValues")]
    pub(crate) not_values: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMatch {
    pub(crate) prefix: Option<String>,
    pub(crate) path: Option<String>,
    pub(crate) methods: Option<Vec<String>>,
    #[serde(default)]
    pub(crate) ignore_case: bool,
    pub(crate) hosts: Option<Vec<String>>,
    #[serde(default)]
    pub(crate) headers: Vec<RawHeaderMatch>,
}

// `"none"` or `{"any"|"all"|"optional": [...]}`. Read by hand rather than as an untagged
// enum: an untagged enum buffers the value and refuses it after serde_json has moved past it,
// so the error's position (and with it the field path, see `locate`) would name the
// enclosing object. (A plain comment: doc comments become the JSON Schema's descriptions.)
#[derive(Debug)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "schema", serde(untagged))]
pub(crate) enum RawRequires {
    Word(String),
    List(RawRequiresList),
}

const REQUIRES: &str =
    "must be \"none\" or an object {\"any\": [...]} or {\"all\": [...]} listing credential method names";

impl<'de> Deserialize<'de> for RawRequires {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = RawRequires;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(REQUIRES)
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RawRequires, E> {
                Ok(RawRequires::Word(v.to_string()))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<RawRequires, A::Error> {
                refuse_seq(seq, REQUIRES)
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<RawRequires, A::Error> {
                let value = read_object(map)?;
                RawRequiresList::deserialize(value)
                    .map(RawRequires::List)
                    .map_err(|_| serde::de::Error::custom(REQUIRES))
            }
        }
        d.deserialize_any(V)
    }
}

/// Refuses an array with `message` after reading it whole (positioned like [`read_object`]).
fn refuse_seq<'de, A: serde::de::SeqAccess<'de>, T>(mut seq: A, message: &str) -> Result<T, A::Error> {
    while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
    Err(serde::de::Error::custom(message))
}

/// Reads a whole JSON object (so a refusal of its content is positioned after it, at the
/// field that holds it).
fn read_object<'de, A: serde::de::MapAccess<'de>>(mut map: A) -> Result<serde_json::Value, A::Error> {
    let mut out = serde_json::Map::new();
    while let Some((k, v)) = map.next_entry::<String, serde_json::Value>()? {
        out.insert(k, v);
    }
    Ok(serde_json::Value::Object(out))
}

#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRequiresList {
    pub(crate) any: Option<Vec<String>>,
    pub(crate) all: Option<Vec<String>>,
    pub(crate) optional: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub(crate) struct RawEvents {
    #[serde(default)]
    pub(crate) log: bool,
    pub(crate) sample_allowed: Option<f64>,
    #[serde(default)]
    pub(crate) sinks: BTreeMap<String, RawSink>,
}

/// An event sink (webhook).
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSink {
    pub(crate) cluster: String,
    pub(crate) authority: Option<String>,
    pub(crate) path: String,
    pub(crate) timeout: Option<Duration>,
    #[serde(default)]
    pub(crate) headers: Vec<RawSinkHeader>,
    pub(crate) batch_max: Option<u64>,
    pub(crate) flush_interval: Option<Duration>,
    pub(crate) queue_max: Option<u64>,
    pub(crate) kinds: Option<Vec<String>>,
}

/// A header a sink request carries (`value`, or `value_env` naming a VM environment variable).
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSinkHeader {
    pub(crate) name: String,
    pub(crate) value: Option<String>,
    pub(crate) value_env: Option<String>,
}

/// A duration as Envoy's configuration writes it: protobuf-JSON text (`"300s"`, `"0.5s"`) or
/// the object form of `google.protobuf.Duration` (`{"seconds": 300, "nanos": 0}`) that Envoy's
/// own examples use. Normalised to the text form; validation parses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Duration(pub(crate) String);

impl std::ops::Deref for Duration {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

#[cfg(feature = "schema")]
impl schemars::JsonSchema for Duration {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A duration: protobuf-JSON text (\"300s\", \"0.5s\") or {\"seconds\": 300, \"nanos\": 0}.",
            "oneOf": [
                {"type": "string", "pattern": "^[0-9]+(\\.[0-9]+)?s$"},
                {"type": "object", "additionalProperties": false,
                 "properties": {"seconds": {"type": "integer", "minimum": 0}, "nanos": {"type": "integer", "minimum": 0, "maximum": 999999999}}}
            ]
        })
    }
}

const DURATION: &str = "must be a duration: \"300s\", \"0.5s\" or {\"seconds\": 300, \"nanos\": 0}";

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Object {
            #[serde(default)]
            seconds: i64,
            #[serde(default)]
            nanos: i64,
        }
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Duration;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(DURATION)
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Duration, E> {
                Ok(Duration(v.to_string()))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<Duration, A::Error> {
                refuse_seq(seq, DURATION)
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Duration, A::Error> {
                let o = Object::deserialize(read_object(map)?).map_err(|_| serde::de::Error::custom(DURATION))?;
                if o.seconds < 0 || !(0..1_000_000_000).contains(&o.nanos) {
                    return Ok(Duration(format!("{}.{}s", o.seconds, o.nanos)));
                }
                let frac = format!("{:09}", o.nanos);
                let frac = frac.trim_end_matches('0');
                Ok(Duration(if frac.is_empty() { format!("{}s", o.seconds) } else { format!("{}.{frac}s", o.seconds) }))
            }
        }
        // Anything else is refused inside `deserialize_any` with `expecting` as the message
        // (see `operator_message`), so serde_json positions it at the value.
        d.deserialize_any(V)
    }
}

/// Envoy's `type.matcher.v3.StringMatcher` (as in `jwt_authn` `subjects`).
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub(crate) struct RawStringMatcher {
    pub(crate) exact: Option<String>,
    pub(crate) prefix: Option<String>,
    pub(crate) suffix: Option<String>,
    pub(crate) contains: Option<String>,
    pub(crate) safe_regex: Option<serde_json::Value>,
    #[serde(default)]
    pub(crate) ignore_case: bool,
}

/// `jwt_authn` `JwtCacheConfig`.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub(crate) struct RawJwtCacheConfig {
    pub(crate) jwt_cache_size: Option<u64>,
    /// Accepted for migration: every token up to `max_token_bytes` is cached.
    #[allow(dead_code)]
    pub(crate) jwt_max_token_size: Option<u64>,
}

/// `jwt_authn` `JwtProvider.NormalizePayload`.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub(crate) struct RawNormalizePayload {
    #[serde(default)]
    pub(crate) space_delimited_claims: Vec<String>,
}
