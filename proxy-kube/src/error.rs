//! The crate's one error type: what went wrong, worded as kubectl words it.

use std::fmt;

/// What kind of failure an [`Error`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The kubeconfig could not be read, or names no usable context, cluster or user.
    Config,
    /// The API server answered 401: the credentials are missing, wrong or expired.
    Unauthorized,
    /// The API server answered 403.
    Forbidden,
    /// The object (or a pod of it) does not exist.
    NotFound,
    /// The pod is not running (`status.phase` other than `Running`).
    NotRunning,
    /// The object selects no pod at all.
    NoPods,
    /// A remote port cannot be forwarded: a name no port has, a port the service does
    /// not declare, or a UDP-only port.
    Port,
    /// An object the API server sent cannot be used (a service without a selector, a
    /// workload without `matchLabels`).
    Object,
    /// Any other answer of the API server, or one that cannot be read.
    Api,
    /// The API server could not be reached, or the connection failed.
    Io,
}

/// A failure of this crate; [`Display`](fmt::Display) gives kubectl's text where kubectl
/// has one (`Error from server (NotFound): pods "nope" not found`).
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

// ===== impl Error =====

impl Error {
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            source: None,
        }
    }

    pub(crate) fn with_source(
        mut self,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        self.source = Some(source.into());
        self
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// Whether the object or pod does not exist.
    pub fn is_not_found(&self) -> bool {
        self.kind == ErrorKind::NotFound
    }

    /// An API call's failure: the server's `Status` as kubectl prints it (`Error from
    /// server (REASON): MESSAGE`), or the transport's error.
    pub(crate) fn from_kube(error: kube::Error) -> Self {
        match error {
            kube::Error::Api(status) => {
                let kind = match status.code {
                    401 => ErrorKind::Unauthorized,
                    403 => ErrorKind::Forbidden,
                    404 => ErrorKind::NotFound,
                    _ => ErrorKind::Api,
                };
                let reason = if status.reason.is_empty() {
                    status.code.to_string()
                } else {
                    status.reason.clone()
                };
                let message = format!("Error from server ({reason}): {}", status.message);
                Error::new(kind, message).with_source(kube::Error::Api(status))
            }
            kube::Error::Auth(e) => {
                Error::new(ErrorKind::Config, format!("credentials: {e}")).with_source(e)
            }
            kube::Error::SerdeError(e) => {
                Error::new(ErrorKind::Api, format!("the API server's answer: {e}")).with_source(e)
            }
            kube::Error::RustlsTls(e) => {
                Error::new(ErrorKind::Config, format!("TLS: {e}")).with_source(e)
            }
            other => Error::new(ErrorKind::Io, format!("talking to the API server: {other}"))
                .with_source(other),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}
