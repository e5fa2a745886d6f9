//! [`Gate`]: who may open a connection, and how many may be open, for layers built on
//! the core that accept connections of their own (the HTTP layer): the access lists and
//! the limits a forwarder applies, as one check per new connection.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use crate::limit::{Admission, Permit, Refused};
use crate::stats::Stats;
use crate::{Access, ForwardSpec, Limits};

/// Admits new connections by `allow`/`deny`, `max_connections`, `max_per_source` and
/// `accept_rate`, as a forwarder does; refusals are counted and warned about at most
/// every 10 s.
///
/// # Examples
///
/// ```
/// use proxy_core::{ForwardSpec, Gate};
///
/// let mut spec = ForwardSpec::default();
/// spec.set("deny", "10.0.0.0/8")?;
/// spec.set("max_per_source", "1")?;
/// let gate = Gate::new(&spec);
/// let first = gate.admit("192.0.2.1".parse()?).expect("admitted");
/// assert_eq!(gate.admit("192.0.2.1".parse()?).unwrap_err().to_string(), "refused by the per-source limit");
/// assert_eq!(gate.admit("10.1.2.3".parse()?).unwrap_err().to_string(), "denied by the access lists");
/// drop(first); // its place is free again
/// assert!(gate.admit("192.0.2.1".parse()?).is_ok());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Gate {
    access: Access,
    limits: Limits,
    admission: Arc<Admission>,
    stats: Arc<Stats>,
}

/// An admitted connection; dropping it gives its place back.
#[derive(Debug)]
#[must_use = "the connection counts as open only while this lives"]
pub struct Admitted {
    _permit: Permit,
}

/// Why a connection was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The client is not allowed, or denied, by the access lists.
    Denied,
    /// A limit is reached; its description says which.
    Limited(&'static str),
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Denied => f.write_str("denied by the access lists"),
            Refusal::Limited(limit) => write!(f, "refused by {limit}"),
        }
    }
}

impl std::error::Error for Refusal {}

impl Gate {
    /// The gate of `spec`'s access lists and limits.
    pub fn new(spec: &ForwardSpec) -> Gate {
        Gate {
            access: spec.access(),
            limits: spec.limits(),
            admission: Arc::default(),
            stats: Arc::default(),
        }
    }

    /// Admits a connection from `client`, or says why not.
    ///
    /// # Errors
    ///
    /// The [`Refusal`].
    pub fn admit(&self, client: IpAddr) -> Result<Admitted, Refusal> {
        if !self.access.permits(client) {
            return Err(Refusal::Denied);
        }
        match self.admission.admit(&self.limits, Some(client)) {
            Ok(permit) => Ok(Admitted { _permit: permit }),
            Err(limit) => {
                self.admission.refused(limit, 1, &self.stats, client);
                Err(Refusal::Limited(match limit {
                    Refused::Connections => "the connection limit",
                    Refused::PerSource => "the per-source limit",
                    Refused::Rate => "the accept rate",
                }))
            }
        }
    }
}
