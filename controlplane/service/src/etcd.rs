//! A small blocking etcd v3 client over etcd's JSON gateway (`POST /v3/...`, keys and values in
//! base64, 64-bit integers as strings): the few calls leader election needs (lease grant,
//! keep-alive, revoke; range; a put-if-absent and a compare-and-swap transaction).
//!
//! Why the gateway and not gRPC: the gRPC crates (`etcd-client`) bring tokio, tonic and a `protoc`
//! build step into crates that are otherwise blocking threads; elections make a handful of calls a
//! second, for which one HTTP request each (`ureq`) is plenty. The gateway is served on etcd's
//! client port from 3.4 on (`/v3/`).
//!
//! With `[tls]` on, the calls are HTTPS (rustls, ring): the client trusts `ca_path` alone, checks
//! the endpoint's name or address against its certificate, and presents this process's
//! certificate and key (for etcd's `--client-cert-auth`). Revocation lists (`crl_path`) are not
//! applied to etcd's certificate (ureq's verifier takes none).

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde_json::{json, Value};
use tracing::{debug, warn};

use mmc_config::EtcdUrl;
use mmc_tls::pki_types::{CertificateDer, PrivateKeyDer};
use mmc_tls::TlsContext;
use ureq::tls::{Certificate, ClientCert, PrivateKey, RootCerts, TlsConfig, TlsProvider};

/// What an etcd call failed with.
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    /// No endpoint answered (each one's error joined).
    #[error("etcd unreachable ({endpoints}): {reason}")]
    Unreachable { endpoints: String, reason: String },
    /// An endpoint answered something this client does not understand, or an error status.
    #[error("etcd {path}: {reason}")]
    Protocol { path: String, reason: String },
}

/// A key's value and its revisions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    pub value: Vec<u8>,
    pub mod_revision: i64,
    pub lease: i64,
}

/// A client of one etcd cluster: calls try its endpoints in turn, starting with the last one
/// that answered.
pub struct Etcd {
    url: EtcdUrl,
    agent: ureq::Agent,
    /// `http` or `https`.
    scheme: &'static str,
    /// Index of the endpoint that answered last.
    preferred: std::sync::atomic::AtomicUsize,
}

/// ureq's TLS settings for `tls`: trust its CA alone, present its certificate and key.
fn https(tls: &TlsContext) -> TlsConfig {
    let id = tls.identity();
    let der = |c: &CertificateDer<'_>| Certificate::from_der(c.as_ref()).to_owned();
    let client = id.client.as_ref().and_then(|(chain, key)| {
        let chain: Vec<Certificate<'static>> = chain.iter().map(der).collect();
        client_key(key).map(|k| ClientCert::new_with_certs(&chain, k))
    });
    TlsConfig::builder()
        .provider(TlsProvider::Rustls)
        .unversioned_rustls_crypto_provider(id.provider.clone())
        .root_certs(RootCerts::Specific(Arc::new(
            id.ca.iter().map(der).collect(),
        )))
        .client_cert(client)
        .build()
}

/// `key` as ureq takes it: from PEM (its DER constructor's key kind is not public).
fn client_key(key: &PrivateKeyDer<'_>) -> Option<PrivateKey<'static>> {
    let label = match key {
        PrivateKeyDer::Pkcs1(_) => "RSA PRIVATE KEY",
        PrivateKeyDer::Sec1(_) => "EC PRIVATE KEY",
        _ => "PRIVATE KEY",
    };
    let b64 = B64.encode(key.secret_der());
    let mut pem = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(line));
        pem.push('\n');
    }
    pem.push_str(&format!("-----END {label}-----\n"));
    PrivateKey::from_pem(pem.as_bytes())
        .inspect_err(|e| {
            // Not for a key rustls loaded; etcd then sees no client certificate.
            warn!(error = %e, "etcd: this side's key not usable over HTTPS: no client certificate");
        })
        .ok()
}

/// The longest one HTTP request may take (each endpoint gets this much, bounded by the deadline).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

impl Etcd {
    /// A client over plain HTTP.
    pub fn new(url: EtcdUrl) -> Etcd {
        Etcd::with_tls(url, None)
    }

    /// A client over HTTPS with `tls`'s CA, certificate and key; plain HTTP without.
    pub fn with_tls(url: EtcdUrl, tls: Option<&TlsContext>) -> Etcd {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(REQUEST_TIMEOUT));
        let (config, scheme) = match tls {
            None => (config, "http"),
            Some(tls) => (config.tls_config(https(tls)), "https"),
        };
        Etcd {
            url,
            agent: config.build().new_agent(),
            scheme,
            preferred: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// Whether calls go over HTTPS.
    pub fn is_tls(&self) -> bool {
        self.scheme == "https"
    }

    pub fn url(&self) -> &EtcdUrl {
        &self.url
    }

    /// Grant a lease of `ttl_s` seconds; its id.
    pub fn grant(&self, ttl_s: u64, deadline: Instant) -> Result<i64, EtcdError> {
        let path = "/v3/lease/grant";
        let r = self.post(path, &json!({ "TTL": ttl_s }), deadline)?;
        int_field(&r, "ID").ok_or_else(|| protocol(path, "no lease ID in the reply"))
    }

    /// Renew lease `id`; its remaining TTL in seconds (0: it expired or was revoked).
    pub fn keep_alive(&self, id: i64, deadline: Instant) -> Result<i64, EtcdError> {
        let r = self.post(
            "/v3/lease/keepalive",
            &json!({ "ID": id.to_string() }),
            deadline,
        )?;
        // A stream of one message: {"result": {..., "TTL": "3"}}; a zero TTL is omitted.
        let result = r.get("result").unwrap_or(&r);
        Ok(int_field(result, "TTL").unwrap_or(0))
    }

    /// Revoke lease `id`: its keys go at once.
    pub fn revoke(&self, id: i64, deadline: Instant) -> Result<(), EtcdError> {
        self.post(
            "/v3/lease/revoke",
            &json!({ "ID": id.to_string() }),
            deadline,
        )
        .map(|_| ())
    }

    /// The value of `key`, if it exists.
    pub fn get(&self, key: &str, deadline: Instant) -> Result<Option<KeyValue>, EtcdError> {
        let path = "/v3/kv/range";
        let r = self.post(path, &json!({ "key": B64.encode(key) }), deadline)?;
        match r.get("kvs").and_then(|k| k.get(0)) {
            None => Ok(None),
            Some(kv) => decode_kv(kv)
                .map(Some)
                .ok_or_else(|| protocol(path, "bad kvs entry")),
        }
    }

    /// Put `key = value` under lease `lease` if `key` does not exist. Ok(None) when it was put;
    /// Ok(Some(current)) when the key exists (its value then).
    pub fn put_if_absent(
        &self,
        key: &str,
        value: &[u8],
        lease: i64,
        deadline: Instant,
    ) -> Result<Option<KeyValue>, EtcdError> {
        let k = B64.encode(key);
        let body = json!({
            "compare": [{ "key": k, "target": "CREATE", "result": "EQUAL", "create_revision": "0" }],
            "success": [{ "request_put": { "key": k, "value": B64.encode(value), "lease": lease.to_string() } }],
            "failure": [{ "request_range": { "key": k } }],
        });
        let path = "/v3/kv/txn";
        let r = self.post(path, &body, deadline)?;
        if r.get("succeeded").and_then(Value::as_bool) == Some(true) {
            return Ok(None);
        }
        let kv = r
            .pointer("/responses/0/response_range/kvs/0")
            .and_then(decode_kv);
        // The key may have gone between the compare and the range: report it as empty.
        Ok(Some(kv.unwrap_or(KeyValue {
            value: Vec::new(),
            mod_revision: 0,
            lease: 0,
        })))
    }

    /// Put `key = value` if the key's mod revision is still `mod_revision` (0: if it does not
    /// exist). Whether it was put.
    pub fn compare_and_put(
        &self,
        key: &str,
        mod_revision: i64,
        value: &[u8],
        deadline: Instant,
    ) -> Result<bool, EtcdError> {
        let k = B64.encode(key);
        let compare = if mod_revision == 0 {
            json!({ "key": k, "target": "CREATE", "result": "EQUAL", "create_revision": "0" })
        } else {
            json!({ "key": k, "target": "MOD", "result": "EQUAL", "mod_revision": mod_revision.to_string() })
        };
        let body = json!({
            "compare": [compare],
            "success": [{ "request_put": { "key": k, "value": B64.encode(value) } }],
        });
        let r = self.post("/v3/kv/txn", &body, deadline)?;
        Ok(r.get("succeeded").and_then(Value::as_bool) == Some(true))
    }

    /// POST `body` to `path` on the first endpoint that answers; the reply's JSON.
    fn post(&self, path: &str, body: &Value, deadline: Instant) -> Result<Value, EtcdError> {
        use std::sync::atomic::Ordering;
        let n = self.url.endpoints.len();
        let first = self.preferred.load(Ordering::Relaxed) % n.max(1);
        let text = body.to_string();
        let mut errors = Vec::new();
        for i in 0..n {
            let at = (first + i) % n;
            let endpoint = &self.url.endpoints[at];
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                errors.push(format!("{endpoint}: deadline passed"));
                break;
            }
            let req = self
                .agent
                .post(format!("{}://{endpoint}{path}", self.scheme))
                .config()
                .timeout_global(Some(left.min(REQUEST_TIMEOUT)))
                .build()
                .header("Content-Type", "application/json");
            let mut resp = match req.send(text.as_str()) {
                Ok(r) => r,
                Err(e) => {
                    debug!(endpoint, path, error = %e, "etcd endpoint failed");
                    errors.push(format!("{endpoint}: {e}"));
                    continue;
                }
            };
            let status = resp.status();
            let reply = resp
                .body_mut()
                .read_to_string()
                .map_err(|e| protocol(path, &format!("{endpoint}: reading the reply: {e}")))?;
            self.preferred.store(at, Ordering::Relaxed);
            // The keep-alive reply is a stream: parse its first JSON value.
            let value = serde_json::Deserializer::from_str(&reply)
                .into_iter::<Value>()
                .next()
                .and_then(|v| v.ok())
                .ok_or_else(|| {
                    protocol(
                        path,
                        &format!("{endpoint}: not JSON ({status}): {reply:.200}"),
                    )
                })?;
            if !status.is_success() || value.get("error").is_some() {
                return Err(protocol(path, &format!("{endpoint}: {status}: {value}")));
            }
            return Ok(value);
        }
        Err(EtcdError::Unreachable {
            endpoints: self.url.endpoints.join(","),
            reason: errors.join("; "),
        })
    }
}

fn protocol(path: &str, reason: &str) -> EtcdError {
    EtcdError::Protocol {
        path: path.to_string(),
        reason: reason.to_string(),
    }
}

/// A 64-bit integer field, sent as a JSON string (or a number).
fn int_field(v: &Value, name: &str) -> Option<i64> {
    match v.get(name)? {
        Value::String(s) => s.parse().ok(),
        Value::Number(n) => n.as_i64(),
        _ => None,
    }
}

fn decode_kv(kv: &Value) -> Option<KeyValue> {
    let value = match kv.get("value") {
        Some(Value::String(s)) => B64.decode(s).ok()?,
        None => Vec::new(),
        Some(_) => return None,
    };
    Some(KeyValue {
        value,
        mod_revision: int_field(kv, "mod_revision").unwrap_or(0),
        lease: int_field(kv, "lease").unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_json_decodes() {
        // As etcd 3.4's gateway writes them: 64-bit integers as strings, bytes in base64,
        // zero fields left out.
        let kv: Value = serde_json::from_str(
            r#"{"key":"L21tYy9tZXRhL2xlYWRlcg==","create_revision":"2","mod_revision":"7",
                "version":"1","value":"dGNwOi8vMTI3LjAuMC4xOjUwMDA=","lease":"2324035707374189831"}"#,
        )
        .unwrap();
        assert_eq!(
            decode_kv(&kv),
            Some(KeyValue {
                value: b"tcp://127.0.0.1:5000".to_vec(),
                mod_revision: 7,
                lease: 2324035707374189831,
            })
        );
        let empty: Value = serde_json::from_str(r#"{"key":"YQ==","mod_revision":"3"}"#).unwrap();
        assert_eq!(decode_kv(&empty).map(|k| k.value), Some(Vec::new()));
        let bad: Value = serde_json::from_str(r#"{"value":"not base64!"}"#).unwrap();
        assert_eq!(decode_kv(&bad), None);
        let n: Value = serde_json::from_str(r#"{"ID":7,"TTL":"3","x":true}"#).unwrap();
        assert_eq!(int_field(&n, "ID"), Some(7));
        assert_eq!(int_field(&n, "TTL"), Some(3));
        assert_eq!(int_field(&n, "x"), None);
        assert_eq!(int_field(&n, "missing"), None);
    }

    #[test]
    fn no_endpoint_answering_is_unreachable() {
        // A port nothing listens on: bind one, then close it.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let url = mmc_config::parse_etcd_url(&format!("etcd://127.0.0.1:{port}")).unwrap();
        let etcd = Etcd::new(url);
        let e = etcd
            .get("/mmc/meta/leader", Instant::now() + Duration::from_secs(2))
            .unwrap_err();
        assert!(matches!(e, EtcdError::Unreachable { .. }), "{e}");
        assert!(e.to_string().contains(&port.to_string()), "{e}");
    }
}
