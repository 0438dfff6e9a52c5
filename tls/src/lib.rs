//! MemCache's TLS layer: mutual TLS 1.3 (rustls, ring) for every TCP channel (client <-> meta
//! service, local service <-> meta service, client <-> local service's data endpoint, local
//! service <-> local service for repairs).
//!
//! [`TlsContext::from_config`] turns the `[tls]` settings into one context per process: its
//! certificate chain and key (`cert_path`, `key_path`; an encrypted PKCS#8 key is decrypted with
//! the password in `key_pass_path`, passed first through the `decrypter_lib_path` library when
//! one is set), the CA it trusts (`ca_path`, the only trust anchor) and the revocation lists
//! (`crl_path`). Both sides present a certificate and both check the other's chain, validity
//! dates and revocation; a peer is authenticated by its CA, not by its name (cluster members
//! dial each other by IP address, and one certificate may serve many hosts).
//!
//! Sockets stay blocking. [`Stream`] is a plain `TcpStream` or a TLS session over one, and is
//! `Read + Write`; the plain variant forwards straight to the socket, so TLS off costs one
//! branch. [`TlsContext::accept`] and [`TlsContext::connect`] complete the handshake within a
//! timeout, so a peer that speaks no TLS (or a plaintext server) fails fast with a reason rather
//! than hanging; [`AcceptError`] says whether the peer sent plaintext.

mod decrypt;
mod keys;
mod stream;
#[cfg(any(test, feature = "testpki"))]
pub mod testpki;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, DigitallySignedStruct, ServerConfig, SignatureScheme};
use tracing::{debug, info, warn};

pub use decrypt::{DECRYPT_PLAIN_MAX, DECRYPT_SYMBOL};
pub use rustls::pki_types;
pub use stream::Stream;

use mmc_config::TlsConfig;

/// Longest a handshake may take, whatever the caller's deadline: a peer that does not finish
/// one by then is cut off (a plaintext server never answers a ClientHello with one).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// What a server sends first over a new session: the client's certificate was accepted.
const ACCEPTED: u8 = 1;

/// Settings that cannot be turned into a TLS context. Each names the file or setting at fault.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("tls: cannot read {what} {path}: {reason}")]
    Read {
        what: &'static str,
        path: String,
        reason: String,
    },
    #[error("tls: {what} {path}: {reason}")]
    Bad {
        what: &'static str,
        path: String,
        reason: String,
    },
    #[error("tls: decrypter library {path}: {reason}")]
    Decrypter { path: String, reason: String },
    #[error("tls: {0}")]
    Config(String),
}

/// Why an incoming connection was refused during its handshake.
#[derive(Debug, thiserror::Error)]
pub enum AcceptError {
    /// The first bytes are no TLS record: a plaintext (or otherwise non-TLS) peer.
    #[error("not TLS: the peer sent plaintext (first byte {first:#04x}); TLS is required")]
    Plaintext { first: u8 },
    /// The peer closed before sending a byte (a probe, a port scan).
    #[error("closed before the handshake")]
    Closed,
    /// The handshake failed: no or a bad certificate, another CA, revoked, expired, timeout.
    #[error("TLS handshake failed: {0}")]
    Handshake(String),
}

/// One process's TLS settings, shared by its servers and its outgoing connections.
pub struct TlsContext {
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
    identity: Arc<Identity>,
}

/// What another library's TLS client (the etcd client's HTTPS) needs to speak as this process:
/// the CA's certificates (its trust anchors), this side's chain and key (already decrypted; None
/// only in a test's context without a client certificate), and the crypto provider (ring).
pub struct Identity {
    pub ca: Vec<CertificateDer<'static>>,
    pub client: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    pub provider: Arc<CryptoProvider>,
}

impl std::fmt::Debug for TlsContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsContext(TLS 1.3, mutual)")
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl TlsContext {
    /// The context `tls` describes, or None when TLS is off. Reads and checks every file now, so
    /// a bad setting fails at start-up with the file's name.
    pub fn from_config(tls: &TlsConfig) -> Result<Option<Arc<TlsContext>>, TlsError> {
        if !tls.enable {
            return Ok(None);
        }
        tls.validate()
            .map_err(|e| TlsError::Config(e.to_string()))?;
        if !tls.package_path.is_empty() {
            info!(package_path = %tls.package_path,
                "tls.package_path is accepted for compatibility and unused: TLS is built in (rustls)");
        }
        let chain = keys::cert_chain(&tls.cert_path)?;
        let key = keys::private_key(tls)?;
        let roots = Arc::new(keys::roots(&tls.ca_path)?);
        let crls = keys::crls(&tls.crl_path)?;
        let identity = Arc::new(Identity {
            ca: keys::cert_chain(&tls.ca_path)?,
            client: Some((chain.clone(), key.clone_key())),
            provider: provider(),
        });
        let provider = provider();
        let versions: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];

        let client_verifier =
            WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
                .with_crls(crls.clone())
                .build()
                .map_err(|e| TlsError::Config(format!("client certificate verifier: {e}")))?;
        let server = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(versions)
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_client_cert_verifier(client_verifier)
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(|e| TlsError::Bad {
                what: "certificate and key",
                path: format!("{} / {}", tls.cert_path, tls.key_path),
                reason: e.to_string(),
            })?;

        let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
            .with_crls(crls)
            .build()
            .map_err(|e| TlsError::Config(format!("server certificate verifier: {e}")))?;
        let client = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .map_err(|e| TlsError::Config(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(ByCa(webpki)))
            .with_client_auth_cert(chain, key)
            .map_err(|e| TlsError::Bad {
                what: "certificate and key",
                path: format!("{} / {}", tls.cert_path, tls.key_path),
                reason: e.to_string(),
            })?;
        info!(cert = %tls.cert_path, ca = %tls.ca_path, crl = %tls.crl_path, "TLS 1.3 on, mutual");
        Ok(Some(Arc::new(TlsContext {
            server: Arc::new(server),
            client: Arc::new(client),
            identity,
        })))
    }

    /// This process's CA, chain and key, for a TLS client of another library (etcd's HTTPS).
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// The server side: wait for the peer's first byte, refuse a peer that does not speak TLS,
    /// and complete the handshake, all within [`HANDSHAKE_TIMEOUT`]. The socket's timeouts are left
    /// as the handshake set them: the caller sets its own afterwards.
    pub fn accept(&self, tcp: TcpStream) -> Result<Stream, AcceptError> {
        self.accept_with(tcp, true)
    }

    /// [`TlsContext::accept`] for a protocol of others (HTTPS: `/metrics`, `/health`): the same
    /// mutual handshake, without the one byte MemCache's own clients wait for after it.
    pub fn accept_https(&self, tcp: TcpStream) -> Result<Stream, AcceptError> {
        self.accept_with(tcp, false)
    }

    fn accept_with(&self, tcp: TcpStream, confirm: bool) -> Result<Stream, AcceptError> {
        let started = std::time::Instant::now();
        let handshake = |e: std::io::Error| AcceptError::Handshake(e.to_string());
        tcp.set_read_timeout(Some(HANDSHAKE_TIMEOUT))
            .and_then(|_| tcp.set_write_timeout(Some(HANDSHAKE_TIMEOUT)))
            .map_err(handshake)?;
        let mut first = [0u8; 1];
        match tcp.peek(&mut first) {
            Ok(0) => return Err(AcceptError::Closed),
            Ok(_) => {}
            Err(e) => return Err(handshake(e)),
        }
        // A TLS connection opens with a handshake record (content type 22).
        if first[0] != 0x16 {
            return Err(AcceptError::Plaintext { first: first[0] });
        }
        let conn = rustls::ServerConnection::new(self.server.clone())
            .map_err(|e| AcceptError::Handshake(e.to_string()))?;
        let mut s = rustls::StreamOwned::new(conn, stream::BufSock::new(tcp));
        // The whole handshake, not each read, is bounded: a peer trickling bytes gets no longer.
        let deadline = started + HANDSHAKE_TIMEOUT;
        while s.conn.is_handshaking() {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Err(AcceptError::Handshake(format!(
                    "not finished within {} ms",
                    HANDSHAKE_TIMEOUT.as_millis()
                )));
            }
            let tcp = s.get_ref().tcp();
            tcp.set_read_timeout(Some(left))
                .and_then(|_| tcp.set_write_timeout(Some(left)))
                .map_err(handshake)?;
            if let Err(e) = s.conn.complete_io(&mut s.sock) {
                return Err(match e.kind() {
                    std::io::ErrorKind::UnexpectedEof => {
                        AcceptError::Handshake("the peer closed during the handshake".into())
                    }
                    _ => handshake(e),
                });
            }
        }
        // TLS 1.3 clients finish their handshake before the server has checked their certificate:
        // one byte tells the client it was accepted (a refused one reads the server's alert).
        if confirm {
            s.write_all(&[ACCEPTED])
                .and_then(|_| s.flush())
                .map_err(handshake)?;
        }
        Ok(Stream::server(s))
    }

    /// The client side: complete the handshake with `addr` over `tcp` within `timeout` (capped
    /// at [`HANDSHAKE_TIMEOUT`]). The error says why (a plaintext server closes or stays
    /// silent; a server with a certificate from another CA is refused by name).
    pub fn connect(
        &self,
        tcp: TcpStream,
        addr: SocketAddr,
        timeout: Duration,
    ) -> std::io::Result<Stream> {
        self.connect_with(tcp, addr, timeout, true)
    }

    /// [`TlsContext::connect`] to a server of [`TlsContext::accept_https`] (a `/metrics`
    /// endpoint): the same handshake, without waiting for the server's one byte. A refusal of
    /// this side's certificate shows at the first read.
    pub fn connect_https(
        &self,
        tcp: TcpStream,
        addr: SocketAddr,
        timeout: Duration,
    ) -> std::io::Result<Stream> {
        self.connect_with(tcp, addr, timeout, false)
    }

    fn connect_with(
        &self,
        tcp: TcpStream,
        addr: SocketAddr,
        timeout: Duration,
        confirm: bool,
    ) -> std::io::Result<Stream> {
        let timeout = timeout.min(HANDSHAKE_TIMEOUT).max(Duration::from_millis(1));
        tcp.set_read_timeout(Some(timeout))?;
        tcp.set_write_timeout(Some(timeout))?;
        let name = ServerName::IpAddress(addr.ip().into());
        let conn = rustls::ClientConnection::new(self.client.clone(), name)
            .map_err(std::io::Error::other)?;
        let mut s = rustls::StreamOwned::new(conn, stream::BufSock::new(tcp));
        while s.conn.is_handshaking() {
            if let Err(e) = s.conn.complete_io(&mut s.sock) {
                let why = match e.kind() {
                    std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset => {
                        format!("TLS handshake: the server closed the connection ({e}): does it run without TLS?")
                    }
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => format!(
                        "TLS handshake: no answer within {} ms (does the server run without TLS?)",
                        timeout.as_millis()
                    ),
                    _ => format!("TLS handshake: {e}"),
                };
                return Err(std::io::Error::new(e.kind(), why));
            }
        }
        if !confirm {
            return Ok(Stream::client(s));
        }
        let mut accepted = [0u8; 1];
        match s.read_exact(&mut accepted) {
            Ok(()) if accepted[0] == ACCEPTED => Ok(Stream::client(s)),
            Ok(()) => Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "TLS handshake: the server is not a MemCache TLS endpoint",
            )),
            Err(e) => Err(std::io::Error::new(
                e.kind(),
                format!("TLS handshake: the server refused this side's certificate: {e}"),
            )),
        }
    }
}

impl TlsContext {
    /// This context with a client side that presents no certificate (it still checks the
    /// server's against `ca_path`): what a peer without a certificate looks like, for tests of
    /// its refusal.
    #[cfg(any(test, feature = "testpki"))]
    pub fn without_client_certificate(&self, ca_path: &str) -> Result<Arc<TlsContext>, TlsError> {
        let provider = provider();
        let verifier = WebPkiServerVerifier::builder_with_provider(
            Arc::new(keys::roots(ca_path)?),
            provider.clone(),
        )
        .build()
        .map_err(|e| TlsError::Config(format!("server certificate verifier: {e}")))?;
        let client = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| TlsError::Config(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(ByCa(verifier)))
            .with_no_client_auth();
        Ok(Arc::new(TlsContext {
            server: self.server.clone(),
            client: Arc::new(client),
            identity: Arc::new(Identity {
                ca: self.identity.ca.clone(),
                client: None,
                provider: self.identity.provider.clone(),
            }),
        }))
    }
}

/// An accepted connection as a server serves it: plaintext with TLS off; else after a mutual TLS
/// handshake with the socket's timeouts set back to `idle`, or None: refused, and logged with the
/// peer's address (a plaintext peer, a bad or missing certificate, a handshake that timed out).
/// `channel` names the endpoint in the logs (`meta`, `data`).
pub fn secure(
    stream: TcpStream,
    tls: Option<&TlsContext>,
    peer: Option<SocketAddr>,
    idle: Option<Duration>,
    channel: &str,
) -> Option<Stream> {
    secure_with(stream, tls, peer, idle, channel, true)
}

/// [`secure`] for an HTTPS endpoint (`/metrics`, `/health`): [`TlsContext::accept_https`].
pub fn secure_https(
    stream: TcpStream,
    tls: Option<&TlsContext>,
    peer: Option<SocketAddr>,
    idle: Option<Duration>,
    channel: &str,
) -> Option<Stream> {
    secure_with(stream, tls, peer, idle, channel, false)
}

fn secure_with(
    stream: TcpStream,
    tls: Option<&TlsContext>,
    peer: Option<SocketAddr>,
    idle: Option<Duration>,
    channel: &str,
    confirm: bool,
) -> Option<Stream> {
    let Some(tls) = tls else {
        return Some(Stream::Plain(stream));
    };
    match tls.accept_with(stream, confirm) {
        Ok(s) => {
            let set = s.tcp().set_read_timeout(idle);
            if let Err(e) = set.and_then(|_| s.tcp().set_write_timeout(idle)) {
                warn!(?peer, channel, error = %e, "connection refused: socket options not set");
                return None;
            }
            Some(s)
        }
        Err(AcceptError::Closed) => {
            debug!(?peer, channel, "connection closed before a TLS handshake");
            None
        }
        Err(e @ AcceptError::Plaintext { .. }) => {
            warn!(?peer, channel, error = %e, "connection refused: plaintext peer, TLS is required");
            None
        }
        Err(e) => {
            warn!(?peer, channel, error = %e, "connection refused: TLS handshake failed");
            None
        }
    }
}

/// Checks a server's chain, dates and revocation against the CA, and not its name: peers dial
/// each other by address, and any holder of a certificate from the cluster's CA is a member.
#[derive(Debug)]
struct ByCa(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ByCa {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        use rustls::CertificateError::{NotValidForName, NotValidForNameContext};
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            // The name is checked last, after the chain, the dates and the revocation lists.
            Err(rustls::Error::InvalidCertificate(
                NotValidForName | NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests;
