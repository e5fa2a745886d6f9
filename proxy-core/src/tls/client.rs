//! TLS origination: [`ClientTls`], connecting to upstreams over TLS (the `upstream_tls`
//! keys), verifying their certificates against the system's CAs or `upstream_ca`, and
//! sending the target's name as SNI.

use std::io;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::client::TlsStream;

use super::{certs, provider};
use crate::target::Host;
use crate::{BuildError, ForwardSpec};

/// How a forward connects to its upstreams over TLS. Cheap to clone.
///
/// # Examples
///
/// ```
/// use proxy_core::{ForwardSpec, tls::ClientTls};
///
/// let mut spec = ForwardSpec::default();
/// spec.set("target", "10.0.0.7:443")?;
/// assert!(ClientTls::from_spec(&spec, &[])?.is_none());
///
/// spec.set("upstream_tls", "true")?;
/// spec.set("upstream_server_name", "api.internal")?;
/// let tls = ClientTls::from_spec(&spec, &[])?.expect("upstream_tls is on");
/// assert_eq!(tls.server_name(), Some("api.internal"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct ClientTls {
    connector: tokio_rustls::TlsConnector,
    /// The name sent and verified; `None`: the target's own.
    server_name: Option<ServerName<'static>>,
}

impl ClientTls {
    /// The TLS origination `spec`'s keys describe (`upstream_tls`, `upstream_ca`,
    /// `upstream_insecure`, `upstream_server_name`), offering the application protocols
    /// `alpn`; `None` when `upstream_tls` is off. Reads the CA files now. With
    /// `upstream_insecure`, logs a warning: nothing is verified.
    ///
    /// # Errors
    ///
    /// [`BuildError::Invalid`] naming the key: a CA file that cannot be read, no system
    /// CAs, or a server name that is not a DNS name or IP address.
    pub fn from_spec(spec: &ForwardSpec, alpn: &[&str]) -> Result<Option<ClientTls>, BuildError> {
        if !spec.upstream_tls {
            return Ok(None);
        }
        let invalid = |key: &'static str| move |why: String| BuildError::Invalid { key, why };
        let provider = provider();
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| invalid("upstream_tls")(e.to_string()))?;
        let mut config = if spec.upstream_insecure {
            tracing::warn!(
                target = ?spec.target.as_ref().map(ToString::to_string),
                "upstream_insecure: the upstream's TLS certificate is NOT verified; anyone on \
                 the path can impersonate it"
            );
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(Unverified(provider)))
                .with_no_client_auth()
        } else {
            let roots = match &spec.upstream_ca {
                Some(path) => certs::roots(path).map_err(invalid("upstream_ca"))?,
                None => system_roots().map_err(invalid("upstream_tls"))?,
            };
            builder.with_root_certificates(roots).with_no_client_auth()
        };
        config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
        let server_name = match &spec.upstream_server_name {
            None => None,
            Some(name) => Some(ServerName::try_from(name.clone()).map_err(|_| {
                invalid("upstream_server_name")(format!("`{name}` is not a DNS name or IP address"))
            })?),
        };
        Ok(Some(ClientTls {
            connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
            server_name,
        }))
    }

    /// The same settings (the CAs read once, shared), sending and verifying `name`
    /// instead: for upstreams whose certificates name something other than the host
    /// connected to (a Service's `NAME.NAMESPACE.svc`, say).
    ///
    /// # Errors
    ///
    /// `name` is not a DNS name or IP address.
    ///
    /// # Examples
    ///
    /// ```
    /// use proxy_core::{ForwardSpec, tls::ClientTls};
    ///
    /// let mut spec = ForwardSpec::default();
    /// spec.set("upstream_tls", "true")?;
    /// spec.set("upstream_insecure", "true")?;
    /// let tls = ClientTls::from_spec(&spec, &[])?.expect("upstream_tls is on");
    /// let web = tls.with_server_name("web.default.svc")?;
    /// assert_eq!(web.server_name(), Some("web.default.svc"));
    /// assert!(tls.with_server_name("not a name").is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn with_server_name(&self, name: &str) -> io::Result<ClientTls> {
        let name = ServerName::try_from(name.to_owned()).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("`{name}` is not a DNS name or IP address"),
            )
        })?;
        Ok(ClientTls {
            connector: self.connector.clone(),
            server_name: Some(name),
        })
    }

    /// The name sent and verified when it was set (`upstream_server_name`).
    pub fn server_name(&self) -> Option<&str> {
        match &self.server_name {
            Some(ServerName::DnsName(name)) => Some(name.as_ref()),
            _ => None,
        }
    }

    /// The name to verify an upstream of `host` against: `upstream_server_name`, else
    /// the host itself (an SRV name without its `_service._proto.` labels).
    fn name_for(&self, host: &Host) -> io::Result<ServerName<'static>> {
        if let Some(name) = &self.server_name {
            return Ok(name.clone());
        }
        let name = match host {
            Host::Ip(ip) => return Ok(ServerName::IpAddress((*ip).into())),
            Host::Name(name) => name.as_str(),
            Host::Srv(name) => {
                let labels: Vec<&str> = name.split('.').collect();
                let skip = labels.iter().take_while(|l| l.starts_with('_')).count();
                &name[labels[..skip].iter().map(|l| l.len() + 1).sum::<usize>()..]
            }
        };
        ServerName::try_from(name.trim_end_matches('.').to_owned()).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("`{name}` is not a name to verify a certificate against; set upstream_server_name"),
            )
        })
    }

    /// Completes a TLS handshake over `stream`, a connection to an upstream of `host`.
    ///
    /// # Errors
    ///
    /// The handshake failed: a certificate that is expired, for another name, or not
    /// issued by a trusted CA (the error says which), or the connection failed.
    pub async fn connect<IO>(&self, stream: IO, host: &Host) -> io::Result<TlsStream<IO>>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let name = self.name_for(host)?;
        self.connector.connect(name, stream).await.map_err(explain)
    }
}

/// A handshake error with the certificate problems rustls reports tersely said plainly.
fn explain(e: io::Error) -> io::Error {
    use rustls::{CertificateError, Error};
    let Some(Error::InvalidCertificate(why)) = e.get_ref().and_then(|e| e.downcast_ref()) else {
        return e;
    };
    let plain = match why {
        CertificateError::UnknownIssuer => {
            "the upstream's certificate is not issued by a trusted CA (upstream_ca, or the \
             system's CAs)"
                .to_owned()
        }
        CertificateError::Other(other) if format!("{other:?}").contains("CaUsedAsEndEntity") => {
            "the upstream presents a CA certificate as its own (a self-signed certificate?); \
             trust it with upstream_ca only if it is a leaf"
                .to_owned()
        }
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
            format!("the upstream's certificate has expired: {why}")
        }
        _ => return e,
    };
    io::Error::new(e.kind(), plain)
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

/// The system's CA certificates (`/etc/ssl/certs` and the like).
fn system_roots() -> Result<rustls::RootCertStore, String> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = rustls::RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        return Err(format!(
            "no system CA certificates found ({}); install them (Debian: ca-certificates) or \
             set upstream_ca",
            (found.errors.first()).map_or_else(|| "none readable".to_owned(), ToString::to_string)
        ));
    }
    Ok(roots)
}

/// Accepts any certificate (`upstream_insecure`); signatures are still checked, so the
/// handshake is with the holder of the certificate's key, whoever that is.
#[derive(Debug)]
struct Unverified(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
