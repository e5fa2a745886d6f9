//! What a port-forward client needs to open its own connections to the API server: the
//! URL, a rustls client configuration made from the kubeconfig (CA data or file,
//! `insecure-skip-tls-verify`, client certificate and key, an exec plugin's
//! certificate), and the `Authorization` header value (a bearer token, a token file, an
//! exec plugin's or auth provider's token, or basic auth), all taken through kube-rs's
//! public `ConfigExt`.

use std::io;
use std::sync::Arc;

use http::header::AUTHORIZATION;
use kube::client::ConfigExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::{self, ClientConfig};
use tower::{BoxError, Layer, ServiceExt};

use crate::client::Client;
use crate::error::{Error, ErrorKind};

/// A connection to the API server: TCP, or TLS over TCP.
pub trait ApiStream: AsyncRead + AsyncWrite + Send + Unpin {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin> ApiStream for T {}

/// Where the API server is and how to talk to it, for a client that opens connections
/// of its own (port-forward upgrades).
///
/// # Examples
///
/// ```no_run
/// # #[tokio::main]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let client = proxy_kube::Client::builder().build().await?;
/// let endpoint = client.api_endpoint().await?;
/// let stream = endpoint.connect().await?;
/// // Send `POST /api/v1/namespaces/NS/pods/NAME/portforward` with
/// // `Authorization: {endpoint.authorization}` and upgrade the connection.
/// # drop(stream);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct ApiEndpoint {
    /// The cluster's `server` URL (`https://10.0.0.1:6443`, maybe with a path prefix).
    pub url: http::Uri,
    /// The TLS client configuration for an `https` URL (ALPN `http/1.1`, which the
    /// port-forward upgrades need); `None` for `http`.
    pub tls: Option<Arc<ClientConfig>>,
    /// The name the server's certificate is checked against and sent as SNI: the
    /// kubeconfig's `tls-server-name`, else the URL's host.
    pub server_name: String,
    /// The `Authorization` header value (`Bearer TOKEN`, `Basic ...`), if any.
    pub authorization: Option<String>,
}

impl std::fmt::Debug for ApiEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiEndpoint")
            .field("url", &self.url)
            .field("tls", &self.tls.is_some())
            .field("server_name", &self.server_name)
            .field(
                "authorization",
                &self.authorization.as_ref().map(|_| "<set>"),
            )
            .finish()
    }
}

// ===== impl ApiEndpoint =====

impl ApiEndpoint {
    /// Reads it from a kube-rs configuration; an exec plugin or token file is run or
    /// read now, so call it again for a fresh token.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Config`]: a URL without a host, TLS material that cannot be used, an
    /// exec plugin that fails.
    pub async fn from_config(config: &kube::Config) -> Result<ApiEndpoint, Error> {
        let url = config.cluster_url.clone();
        let host = url.host().ok_or_else(|| {
            Error::new(ErrorKind::Config, format!("server URL {url} has no host"))
        })?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let tls = if url.scheme_str() == Some("https") {
            let mut tls = config
                .rustls_client_config()
                .map_err(|e| Error::new(ErrorKind::Config, format!("TLS: {e}")).with_source(e))?;
            tls.alpn_protocols = vec![b"http/1.1".to_vec()];
            Some(Arc::new(tls))
        } else {
            None
        };
        let server_name = config.tls_server_name.clone().unwrap_or(host);
        let authorization = authorization(config).await?;
        Ok(ApiEndpoint {
            url,
            tls,
            server_name,
            authorization,
        })
    }

    /// Opens a connection to the API server: TCP to the URL's host and port (443 or 80
    /// by default), then TLS when the URL is `https`.
    ///
    /// # Errors
    ///
    /// The host cannot be resolved or reached, or the TLS handshake fails (a certificate
    /// the CA did not sign, a name it does not cover).
    pub async fn connect(&self) -> io::Result<Box<dyn ApiStream>> {
        let host = (self.url.host())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "server URL has no host"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port = (self.url.port_u16()).unwrap_or(if self.tls.is_some() { 443 } else { 80 });
        let tcp = TcpStream::connect((host, port)).await?;
        tcp.set_nodelay(true)?;
        let Some(tls) = &self.tls else {
            return Ok(Box::new(tcp));
        };
        let name = rustls::pki_types::ServerName::try_from(self.server_name.clone())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let stream = TlsConnector::from(tls.clone()).connect(name, tcp).await?;
        Ok(Box::new(stream))
    }
}

/// The `Authorization` value kube-rs would send: its auth layer is run over a request
/// that goes nowhere, so every kind of credential it knows is covered.
async fn authorization(config: &kube::Config) -> Result<Option<String>, Error> {
    let layer = config.auth_layer().map_err(Error::from_kube)?;
    let Some(layer) = layer else {
        return Ok(None);
    };
    // The layers want an HTTP body and answer a response: the header goes back in one.
    let capture = tower::service_fn(|request: http::Request<String>| async move {
        let mut response = http::Response::new(());
        if let Some(value) = request.headers().get(AUTHORIZATION) {
            response.headers_mut().insert(AUTHORIZATION, value.clone());
        }
        Ok::<_, BoxError>(response)
    });
    let response = (layer
        .layer(capture)
        .oneshot(http::Request::new(String::new()))
        .await)
        .map_err(|e| Error::new(ErrorKind::Config, format!("credentials: {e}")))?;
    Ok((response.headers().get(AUTHORIZATION))
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned))
}

// ===== impl Client =====

impl Client {
    /// The API server's endpoint for connections of our own (see [`ApiEndpoint`]).
    ///
    /// # Errors
    ///
    /// As [`ApiEndpoint::from_config`].
    pub async fn api_endpoint(&self) -> Result<ApiEndpoint, Error> {
        ApiEndpoint::from_config(&self.config).await
    }
}
