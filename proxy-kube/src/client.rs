//! The API client: a kubeconfig (`--kubeconfig`, else `KUBECONFIG`, else
//! `~/.kube/config`), a context (`--context`, else the current one) and a namespace
//! (`-n`, else the context's, else `default`), read by kube-rs.

use std::path::PathBuf;

use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::error::{Error, ErrorKind};

/// Builds a [`Client`]; every setting is optional.
#[derive(Clone, Debug, Default)]
pub struct ClientBuilder {
    kubeconfig: Option<PathBuf>,
    context: Option<String>,
    namespace: Option<String>,
}

/// A connection to the API server of one kubeconfig context, in one namespace.
///
/// # Examples
///
/// ```no_run
/// # #[tokio::main]
/// # async fn main() -> Result<(), proxy_kube::Error> {
/// let client = proxy_kube::Client::builder().context("kind-kind").namespace("web").build().await?;
/// let resolved = client.resolve(&"svc/web".parse().unwrap()).await?;
/// println!("{} ready pods", resolved.ready_pods().len());
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Client {
    pub(crate) kube: kube::Client,
    pub(crate) config: kube::Config,
    namespace: String,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("cluster_url", &self.config.cluster_url)
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

// ===== impl ClientBuilder =====

impl ClientBuilder {
    /// The kubeconfig file (`--kubeconfig`). Default: the files `KUBECONFIG` lists,
    /// merged, else `~/.kube/config`.
    pub fn kubeconfig(mut self, path: impl Into<PathBuf>) -> Self {
        self.kubeconfig = Some(path.into());
        self
    }

    /// The context (`--context`). Default: the kubeconfig's `current-context`.
    pub fn context(mut self, context: impl Into<String>) -> Self {
        self.context = Some(context.into());
        self
    }

    /// The namespace (`-n`). Default: the context's namespace, else `default`.
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = Some(namespace.into());
        self
    }

    /// Reads the kubeconfig and makes the client (no request is sent yet).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Config`]: the file cannot be read or parsed, the context, its cluster
    /// or its user is missing, a certificate or key cannot be used.
    pub async fn build(self) -> Result<Client, Error> {
        let options = KubeConfigOptions {
            context: self.context.clone(),
            cluster: None,
            user: None,
        };
        let config = match &self.kubeconfig {
            Some(path) => {
                let file = Kubeconfig::read_from(path).map_err(|e| {
                    Error::new(ErrorKind::Config, format!("{}: {e}", path.display())).with_source(e)
                })?;
                kube::Config::from_custom_kubeconfig(file, &options).await
            }
            None => kube::Config::from_kubeconfig(&options).await,
        }
        .map_err(|e| {
            let file = (self.kubeconfig.as_ref())
                .map_or_else(|| "kubeconfig".to_owned(), |p| p.display().to_string());
            Error::new(ErrorKind::Config, format!("{file}: {e}")).with_source(e)
        })?;
        Client::from_config(config, self.namespace)
    }
}

// ===== impl Client =====

impl Client {
    /// A builder for a client of the default kubeconfig, context and namespace.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// A client of a kube-rs `config`, in `namespace` (default: the config's).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Config`]: the TLS settings or credentials cannot be used.
    pub fn from_config(config: kube::Config, namespace: Option<String>) -> Result<Client, Error> {
        let namespace = namespace.unwrap_or_else(|| config.default_namespace.clone());
        let kube = kube::Client::try_from(config.clone())
            .map_err(|e| Error::new(ErrorKind::Config, e.to_string()).with_source(e))?;
        Ok(Client {
            kube,
            config,
            namespace,
        })
    }

    /// The namespace objects are looked up in.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The kube-rs configuration read from the kubeconfig.
    pub fn config(&self) -> &kube::Config {
        &self.config
    }

    /// The kube-rs client, for calls this crate does not wrap.
    pub fn kube(&self) -> &kube::Client {
        &self.kube
    }
}
