//! TLS termination: [`ServerTls`], a forward's certificates and TLS settings (the `tls_*`
//! keys) as a rustls server configuration, built once per start or reload (the files are
//! read then), and the handshake of each client connection.
//!
//! rustls with the aws-lc-rs provider: TLS 1.3 and 1.2 only, the provider's default
//! cipher suites (AES-GCM and ChaCha20-Poly1305, forward secrecy only) in the server's
//! order (AES-128-GCM first), session resumption by tickets and by a session cache. The certificate is chosen by the server
//! name the client asks for: an exact name of a certificate's subject alternative names,
//! then a wildcard one, then the `tls_cert` certificate (or the first of `tls_dir`).

mod certs;
mod client;
mod identity;

pub use client::ClientTls;

use std::collections::HashMap;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::server::TlsStream;

use crate::{BuildError, ForwardSpec};

/// A forward's TLS termination: its certificates, chosen by server name, and whether
/// clients must present certificates. Cheap to clone.
///
/// # Examples
///
/// ```
/// use proxy_core::{ForwardSpec, tls::ServerTls};
///
/// let spec = ForwardSpec::default();
/// // No `tls_cert` nor `tls_dir`: no TLS.
/// assert!(ServerTls::from_spec(&spec, &[])?.is_none());
///
/// let mut spec = ForwardSpec::default();
/// spec.set("tls_cert", "/nonexistent/cert.pem")?;
/// spec.set("tls_key", "/nonexistent/key.pem")?;
/// let e = ServerTls::from_spec(&spec, &[]).unwrap_err();
/// assert_eq!(e.key(), "tls_cert");
/// assert!(e.to_string().contains("/nonexistent/cert.pem"), "{e}");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct ServerTls {
    acceptor: tokio_rustls::TlsAcceptor,
    handshake_timeout: Duration,
}

/// What a finished handshake agreed on, for the logs and the PROXY protocol.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TlsInfo {
    /// `TLSv1.3` or `TLSv1.2`.
    pub version: &'static str,
    /// The cipher suite, e.g. `TLS13_AES_128_GCM_SHA256`.
    pub cipher: String,
    /// The server name the client asked for, lower case.
    pub server_name: Option<String>,
    /// The application protocol agreed by ALPN (`h2`, `http/1.1`).
    pub alpn: Option<String>,
    /// The common name of the client's certificate, when it sent one.
    pub client_cn: Option<String>,
    /// Whether the client sent a certificate (checked against `tls_client_ca`).
    pub client_cert: bool,
}

/// The provider every TLS configuration of this crate uses.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// The provider a server uses: the same suites, AES-128-GCM first (a third faster than
/// AES-256-GCM in bulk, and as safe for TLS's purposes), then AES-256-GCM, then
/// ChaCha20-Poly1305; the server's order wins over the client's.
fn server_provider() -> Arc<CryptoProvider> {
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    let rank = |suite: &rustls::SupportedCipherSuite| {
        let name = suite.suite().as_str().unwrap_or_default();
        match () {
            () if name.contains("AES_128_GCM") => 0,
            () if name.contains("AES_256_GCM") => 1,
            () => 2,
        }
    };
    provider.cipher_suites.sort_by_key(rank);
    Arc::new(provider)
}

impl ServerTls {
    /// The TLS termination `spec`'s `tls_*` keys describe, offering the application
    /// protocols `alpn` (most preferred first; none: no ALPN); `None` when it sets
    /// neither `tls_cert` nor `tls_dir`. Reads every file now.
    ///
    /// # Errors
    ///
    /// [`BuildError::Invalid`] naming the key and the file: unreadable, not PEM, no
    /// certificate or key in it, a key that is not the certificate's.
    pub fn from_spec(spec: &ForwardSpec, alpn: &[&str]) -> Result<Option<ServerTls>, BuildError> {
        if spec.tls_cert.is_none() && spec.tls_dir.is_none() {
            return Ok(None);
        }
        let provider = server_provider();
        let invalid = |key: &'static str| move |why: String| BuildError::Invalid { key, why };
        let mut by_name = ByName::default();
        if let (Some(cert), Some(key)) = (&spec.tls_cert, &spec.tls_key) {
            let loaded = certs::pair(cert, key, &provider).map_err(invalid("tls_cert"))?;
            by_name.default = Some(loaded.key.clone());
            by_name.add(&loaded);
        }
        if let Some(dir) = &spec.tls_dir {
            for loaded in certs::directory(dir, &provider).map_err(invalid("tls_dir"))? {
                by_name.default.get_or_insert_with(|| loaded.key.clone());
                by_name.add(&loaded);
            }
        }
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| invalid("tls_cert")(e.to_string()))?;
        let builder = match &spec.tls_client_ca {
            None => builder.with_no_client_auth(),
            Some(path) => {
                let roots = certs::roots(path).map_err(invalid("tls_client_ca"))?;
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                        .build()
                        .map_err(|e| {
                            invalid("tls_client_ca")(format!("{}: {e}", path.display()))
                        })?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder.with_cert_resolver(Arc::new(by_name));
        config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
        config.ignore_client_order = true;
        config.session_storage = rustls::server::ServerSessionMemoryCache::new(4096);
        config.ticketer = rustls::crypto::aws_lc_rs::Ticketer::new()
            .map_err(|e| invalid("tls_cert")(format!("session tickets: {e}")))?;
        Ok(Some(ServerTls {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
            handshake_timeout: spec.tls_handshake_timeout,
        }))
    }

    /// Completes the TLS handshake of the client connection `stream`, within the
    /// `tls_handshake_timeout`.
    ///
    /// # Errors
    ///
    /// The handshake failed (its alert or error), the client closed, or the time ran out
    /// (`TimedOut`).
    pub async fn accept<IO>(&self, stream: IO) -> io::Result<TlsStream<IO>>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        tokio::time::timeout(self.handshake_timeout, self.acceptor.accept(stream))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"))?
    }
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("handshake_timeout", &self.handshake_timeout)
            .finish_non_exhaustive()
    }
}

impl TlsInfo {
    /// What the handshake of `stream` agreed on.
    pub fn of<IO>(stream: &TlsStream<IO>) -> TlsInfo {
        let (_, connection) = stream.get_ref();
        let version = match connection.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
            Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
            _ => "",
        };
        let cipher = (connection.negotiated_cipher_suite())
            .and_then(|s| s.suite().as_str())
            .unwrap_or_default()
            .to_owned();
        let certs = connection.peer_certificates();
        TlsInfo {
            version,
            cipher,
            server_name: connection.server_name().map(str::to_ascii_lowercase),
            alpn: (connection.alpn_protocol()).map(|p| String::from_utf8_lossy(p).into_owned()),
            client_cn: certs
                .and_then(|c| c.first())
                .and_then(|leaf| identity::common_name(leaf)),
            client_cert: certs.is_some_and(|c| !c.is_empty()),
        }
    }
}

/// Certificates by the names they serve: exact names, wildcard domains (`*.example` is
/// kept as `example`), and a default for every other name and for clients that send none.
#[derive(Debug, Default)]
struct ByName {
    exact: HashMap<String, Arc<CertifiedKey>>,
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    default: Option<Arc<CertifiedKey>>,
}

impl ByName {
    /// Serves `loaded`'s names with it; a name already served keeps its first certificate.
    fn add(&mut self, loaded: &certs::Loaded) {
        for name in &loaded.names {
            let map = match name.strip_prefix("*.") {
                Some(domain) => self.wildcard.entry(domain.to_owned()),
                None => self.exact.entry(name.clone()),
            };
            map.or_insert_with(|| loaded.key.clone());
        }
        tracing::debug!(file = %loaded.file.display(), names = ?loaded.names, "TLS certificate");
    }

    fn pick(&self, name: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let name = name.map(str::to_ascii_lowercase);
        let exact = name.as_deref().and_then(|n| self.exact.get(n));
        let wildcard = || {
            (name.as_deref().and_then(|n| n.split_once('.')))
                .and_then(|(_, domain)| self.wildcard.get(domain))
        };
        exact.or_else(wildcard).or(self.default.as_ref()).cloned()
    }
}

impl ResolvesServerCert for ByName {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.pick(hello.server_name())
    }
}
