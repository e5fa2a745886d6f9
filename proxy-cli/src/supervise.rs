//! `proxy run --config FILE`: the forwards of a configuration file, kept running and
//! changed in place when the file changes (SIGHUP), by the library's
//! [`Supervisor`](proxy_core::supervise::Supervisor).
//!
//! A reload reads and checks the whole file first; a file with an error is rejected with
//! a logged error and the running forwards stay as they are. Otherwise forwards are
//! matched by name and protocol: new ones start (all of them, or none if one cannot bind),
//! removed ones drain in the background for the drain time, and the others take their new
//! settings in place; a forward renamed on its address carries on under its new name (see
//! [`proxy_core::supervise`]). This module adds the command's part: the file, the
//! registry that names the forwards in `/metrics`, and errors as the command reports them.

use std::path::{Path, PathBuf};
use std::time::Duration;

use proxy_core::spec::StartError;
use proxy_core::supervise::{self, ApplyError, Built, Hold, Slot};
use proxy_core::{ForwardSpec, ForwarderHandle, Transport};
use proxy_http::{HttpForwarder, HttpHandle};

use crate::args::UsageError;
use crate::config::{self, ConfigFile};
use crate::http::HttpWorkers;
use crate::registry::{Forwards, Protocol, Registered};

/// The running forwards of a configuration file.
#[derive(Debug)]
pub struct Supervisor {
    path: PathBuf,
    forwards: Forwards,
    running: supervise::Supervisor<Registered>,
    /// The HTTP forwards, by name: the HTTP layer runs them, not the core's supervisor.
    http: Vec<(String, HttpHandle)>,
    /// The threads HTTP forwards are served on.
    workers: HttpWorkers,
    drain: Duration,
}

impl Supervisor {
    /// Starts every forward of `config` (read from `path`), registering them in
    /// `forwards`; HTTP forwards are served on `workers`.
    ///
    /// # Errors
    ///
    /// A [`UsageError`] for settings the library rejects, or the first bind error; nothing
    /// stays running then.
    pub fn start(
        path: &Path,
        config: &ConfigFile,
        forwards: &Forwards,
        workers: &HttpWorkers,
    ) -> anyhow::Result<Self> {
        let built = build_all(config)?;
        let http = start_http(&http_forwards(config), forwards, workers)?;
        let running = match supervise::Supervisor::start(built, register(forwards)) {
            Ok(running) => running,
            Err(e) => {
                for (name, handle) in http {
                    forwards.remove_http(&name);
                    tokio::spawn(async move { handle.shutdown(Duration::ZERO).await });
                }
                return Err(command_error(e));
            }
        };
        Ok(Supervisor {
            path: path.to_owned(),
            forwards: forwards.clone(),
            running,
            http,
            workers: workers.clone(),
            drain: config.drain,
        })
    }

    /// How long connections may finish on shutdown.
    pub fn drain(&self) -> Duration {
        self.drain
    }

    /// Re-reads the file and applies it.
    ///
    /// # Errors
    ///
    /// Why the file was rejected (then nothing changed), or which forwards could not take
    /// their new settings (those kept their old ones; the rest of the file applied).
    pub async fn reload(&mut self) -> anyhow::Result<()> {
        let config = config::load(&self.path)?;
        let built = build_all(&config)?;
        self.reload_http(&http_forwards(&config)).await?;
        let applied = (self.running)
            .apply(built, self.drain, register(&self.forwards))
            .await;
        if matches!(applied, Ok(()) | Err(ApplyError::Kept(_))) {
            self.drain = config.drain;
        }
        applied.map_err(command_error)
    }

    /// Drains every forward (running and removed) for up to the drain time; `true` when
    /// all finished in time.
    pub async fn shutdown(self) -> bool {
        let drain = self.drain;
        let http = async {
            let mut all = true;
            for (_, handle) in &self.http {
                all &= handle.shutdown(drain).await;
            }
            all
        };
        let (l4, http) = tokio::join!(self.running.shutdown(drain), http);
        l4 && http
    }

    /// Applies the file's HTTP forwards: new ones start (all or none), removed ones
    /// drain in the background, changed ones take their settings in place, or restart
    /// when they listen elsewhere.
    async fn reload_http(&mut self, wanted: &[(String, ForwardSpec)]) -> anyhow::Result<()> {
        let (mut kept, removed): (Vec<_>, Vec<_>) = std::mem::take(&mut self.http)
            .into_iter()
            .partition(|(name, _)| wanted.iter().any(|(n, _)| n == name));
        let mut restart = Vec::new();
        for (name, spec) in wanted {
            match kept.iter().find(|(n, _)| n == name) {
                Some((_, handle)) => {
                    if let Err(e) = handle.reload(spec) {
                        tracing::info!(forward = %name, "restarting: {e}");
                        restart.push((name.clone(), spec.clone()));
                    }
                }
                None => restart.push((name.clone(), spec.clone())),
            }
        }
        for (name, handle) in removed {
            self.forwards.remove_http(&name);
            let drain = self.drain;
            tokio::spawn(async move { handle.shutdown(drain).await });
        }
        for (name, _) in &restart {
            if let Some(i) = kept.iter().position(|(n, _)| n == name) {
                let (name, handle) = kept.remove(i);
                self.forwards.remove_http(&name);
                handle.shutdown(self.drain).await;
            }
        }
        let started = start_http(&restart, &self.forwards, &self.workers);
        self.http = kept;
        self.http.extend(started?);
        Ok(())
    }
}

/// The HTTP forwards of `config`, by name.
fn http_forwards(config: &ConfigFile) -> Vec<(String, ForwardSpec)> {
    (config.forwards.iter())
        .filter(|f| f.spec.protocol == Transport::Http)
        .map(|f| (f.name.clone(), f.spec.clone()))
        .collect()
}

/// Starts HTTP forwards, all or none, listing them in `forwards`.
fn start_http(
    specs: &[(String, ForwardSpec)],
    forwards: &Forwards,
    workers: &HttpWorkers,
) -> anyhow::Result<Vec<(String, HttpHandle)>> {
    let mut started: Vec<(String, HttpHandle)> = Vec::new();
    for (name, spec) in specs {
        let handle = HttpForwarder::new(spec.clone())
            .map_err(|e| UsageError(format!("forward `{name}`: invalid settings: {e}")))
            .map_err(anyhow::Error::from)
            .and_then(|mut f| {
                workers.serve(&mut f)?;
                Ok(f.start()?)
            })
            .map_err(|e| e.context(format!("forward `{name}`")));
        match handle {
            Ok(handle) => started.push((name.clone(), handle)),
            Err(e) => {
                for (_, handle) in started {
                    // Nothing was served yet: close at once.
                    tokio::spawn(async move { handle.shutdown(Duration::ZERO).await });
                }
                return Err(e);
            }
        }
    }
    for (name, handle) in &started {
        forwards.add_http(name.clone(), handle.clone());
    }
    Ok(started)
}

/// Builds every protocol of every forward of `config`, binding and resolving nothing.
///
/// # Errors
///
/// A [`UsageError`] for settings the library rejects; an error when a resolver cannot be
/// set up (hickory cannot read the system DNS configuration).
pub(crate) fn build_all(config: &ConfigFile) -> anyhow::Result<Built> {
    for (name, spec) in http_forwards(config) {
        HttpForwarder::new(spec)
            .map_err(|e| UsageError(format!("forward `{name}`: invalid settings: {e}")))?;
    }
    let specs = (config.forwards.iter())
        .filter(|f| f.spec.protocol != Transport::Http)
        .map(|f| (f.name.clone(), f.spec.clone()));
    supervise::build(specs).map_err(command_error)
}

/// Lists each started forward in `forwards` under its name, protocol and target.
fn register(
    forwards: &Forwards,
) -> impl FnMut(&Slot, &ForwardSpec, ForwarderHandle) -> Registered + '_ {
    |slot, spec, handle| forwards.register(slot.0.clone(), protocol(slot.1), target(spec), handle)
}

fn protocol(transport: Transport) -> Protocol {
    match transport {
        Transport::Udp => Protocol::Udp,
        _ => Protocol::Tcp,
    }
}

fn target(spec: &ForwardSpec) -> String {
    spec.target
        .as_ref()
        .map(ToString::to_string)
        .unwrap_or_default()
}

impl Hold for Registered {
    fn handle(&self) -> &ForwarderHandle {
        Registered::handle(self)
    }

    fn handle_mut(&mut self) -> &mut ForwarderHandle {
        Registered::handle_mut(self)
    }

    fn rename(&mut self, name: &str) {
        Registered::rename(self, name);
    }

    fn reloaded(&mut self, spec: &ForwardSpec) {
        self.set_target(target(spec));
    }

    fn shutdown(self, drain: Duration) -> impl Future<Output = bool> + Send {
        Registered::shutdown(self, drain)
    }
}

/// An error as the command reports it: bad settings are a [`UsageError`] (exit code 2),
/// and a transport that could not start names the forward and itself
/// (`forward `dns`: TCP: failed to bind ...`).
fn command_error(e: ApplyError) -> anyhow::Error {
    match e {
        ApplyError::Invalid { .. } => UsageError(e.to_string()).into(),
        ApplyError::Start { name, error } => {
            let named = format!("forward `{name}`");
            match error {
                StartError::Start { transport, error } => anyhow::Error::from(error)
                    .context(transport.as_str().to_uppercase())
                    .context(named),
                StartError::Invalid(e) => {
                    UsageError(format!("{named}: invalid settings: {e}")).into()
                }
                other => anyhow::Error::from(other).context(named),
            }
        }
        other => other.into(),
    }
}

#[cfg(test)]
mod tests {
    use std::net::{TcpStream, UdpSocket};

    use super::*;

    /// A `tcp,udp` forward on `127.0.0.1:0`, from a file: both protocols are bound, on
    /// one port the kernel chose.
    #[tokio::test]
    async fn tcp_udp_on_port_0_listen_on_one_port() {
        let text = "[[forward]]\nname = \"dns\"\nprotocol = \"tcp,udp\"\n\
                    listen = \"127.0.0.1:0\"\ntarget = \"127.0.0.1:9\"\n";
        let config = config::parse(text, "proxy.toml").unwrap();
        let forwards = Forwards::new();
        let supervisor = Supervisor::start(
            Path::new("proxy.toml"),
            &config,
            &forwards,
            &HttpWorkers::new(Some(1)),
        )
        .unwrap();
        let addrs = |transport| {
            let slot = ("dns".to_owned(), transport);
            let running = supervisor.running.get(&slot).expect("running");
            running.handle().local_addrs().to_vec()
        };
        let (tcp, udp) = (addrs(Transport::Tcp), addrs(Transport::Udp));
        assert_eq!(tcp, udp);
        assert_eq!(tcp.len(), 1);
        assert_ne!(tcp[0].port(), 0);
        assert!(TcpStream::connect(tcp[0]).is_ok(), "TCP {}", tcp[0]);
        assert!(
            UdpSocket::bind(udp[0]).is_err(),
            "UDP {} is not bound",
            udp[0]
        );
        assert_eq!(forwards.metrics().len(), 2);
        assert!(supervisor.shutdown().await);
    }
}
