//! Running under systemd: listening on the sockets of a socket unit (socket activation)
//! and telling the service manager when the proxy is ready and when it stops
//! (`sd_notify(3)`), both found through the environment systemd sets.
//!
//! - [`Inherited`]: when `LISTEN_PID` is this process and `LISTEN_FDS` says systemd
//!   passed sockets, `proxy tcp`, `proxy udp` and `proxy tcp,udp` forward from those
//!   instead of binding PORT and `--listen`. Every socket must be one the subcommand can
//!   use: `proxy tcp` takes listening TCP sockets (`ListenStream=`), `proxy udp` UDP
//!   sockets (`ListenDatagram=`), `proxy tcp,udp` at least one of each.
//! - [`notify`]: with `NOTIFY_SOCKET` set (`Type=notify`), `READY=1` once every
//!   listener is up and `STOPPING=1` when the drain begins.
//!
//! See `deploy/systemd/` for units.

use std::fmt::Write as _;
use std::io;
use std::net::{TcpListener, UdpSocket};

use crate::args::UsageError;
use crate::registry::Registered;

/// The sockets systemd passed, sorted by protocol.
#[derive(Debug, Default)]
pub struct Sockets {
    /// Listening TCP sockets, for `TcpForwarder::start_from`.
    pub tcp: Vec<TcpListener>,
    /// UDP sockets, for `UdpForwarder::start_from`.
    pub udp: Vec<UdpSocket>,
}

/// Which protocols a subcommand forwards, to check the passed sockets against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Wants {
    /// TCP sockets are used (and needed).
    pub tcp: bool,
    /// UDP sockets are used (and needed).
    pub udp: bool,
}

impl Wants {
    /// `proxy tcp`.
    pub const TCP: Wants = Wants {
        tcp: true,
        udp: false,
    };
    /// `proxy udp`.
    pub const UDP: Wants = Wants {
        tcp: false,
        udp: true,
    };
    /// `proxy tcp,udp`.
    pub const TCP_UDP: Wants = Wants {
        tcp: true,
        udp: true,
    };

    fn command(self) -> &'static str {
        match (self.tcp, self.udp) {
            (true, true) => "proxy tcp,udp",
            (false, true) => "proxy udp",
            _ => "proxy tcp",
        }
    }
}

/// The sockets systemd passed to this process, taken by [`Inherited::take`] first thing
/// in `main`, before the process opens a descriptor of its own.
///
/// Taken later, an overstated `LISTEN_FDS` would make the descriptors past the passed
/// ones look passed too while they are the process's own (the runtime's epoll and
/// wake-up descriptors): owning them closes them under the runtime. Taken first, they are
/// not open yet, and the count is refused as it should be.
#[derive(Debug)]
pub struct Inherited(Option<io::Result<Vec<proxy_core::systemd::InheritedSocket>>>);

impl Inherited {
    /// Takes the passed sockets, if any; an error is kept for the subcommand that would
    /// use them to report.
    pub fn take() -> Inherited {
        #[cfg(target_os = "linux")]
        {
            Inherited(Some(proxy_core::systemd::listen_fds()))
        }
        #[cfg(not(target_os = "linux"))]
        {
            Inherited(None)
        }
    }

    /// No sockets: the process was not socket-activated.
    pub fn none() -> Inherited {
        Inherited(None)
    }

    /// The passed sockets, sorted for a subcommand that forwards `wants`; `None` when
    /// the process was not socket-activated, and then the subcommand binds its own. Logs
    /// each socket used.
    ///
    /// # Errors
    ///
    /// A [`UsageError`] when a socket is of a kind the subcommand does not forward (a UDP
    /// socket for `proxy tcp`, a Unix socket, a stream socket with `Accept=yes`) or a
    /// protocol the subcommand forwards got no socket; the cause when the sockets could
    /// not be taken (malformed `LISTEN_FDS`, a descriptor that is not open).
    pub fn sockets(&mut self, wants: Wants) -> anyhow::Result<Option<Sockets>> {
        use anyhow::Context;
        use proxy_core::systemd::SocketKind;

        let Some(taken) = self.0.take() else {
            return Ok(None);
        };
        let inherited = taken.context("cannot take the sockets passed by systemd")?;
        if inherited.is_empty() {
            return Ok(None);
        }
        let command = wants.command();
        let mut sockets = Sockets::default();
        for socket in inherited {
            let shown = socket.to_string();
            match socket.kind() {
                SocketKind::Tcp if wants.tcp => sockets.tcp.push(socket.into_tcp_listener()?),
                SocketKind::Udp if wants.udp => sockets.udp.push(socket.into_udp_socket()?),
                _ => {
                    return Err(UsageError(format!(
                        "systemd passed a {shown} socket, which `{command}` cannot forward \
                         from; it takes {}",
                        taken_kinds(wants)
                    ))
                    .into());
                }
            }
            tracing::info!(socket = %shown, "listening on a socket passed by systemd");
        }
        for (wanted, got, which) in [
            (wants.tcp, sockets.tcp.len(), "TCP (ListenStream=)"),
            (wants.udp, sockets.udp.len(), "UDP (ListenDatagram=)"),
        ] {
            if wanted && got == 0 {
                return Err(UsageError(format!(
                    "systemd passed no {which} socket, which `{command}` needs"
                ))
                .into());
            }
        }
        tracing::info!(
            "socket-activated: forwarding from the sockets systemd passed; PORT and --listen \
             are not bound"
        );
        Ok(Some(sockets))
    }
}

fn taken_kinds(wants: Wants) -> &'static str {
    match (wants.tcp, wants.udp) {
        (true, true) => "listening TCP sockets (ListenStream=) and UDP sockets (ListenDatagram=)",
        (false, true) => "UDP sockets (ListenDatagram=) only",
        _ => "listening TCP sockets (ListenStream=) only",
    }
}

/// Sends `state` (newline-separated `KEY=VALUE` assignments, such as `READY=1`) to the
/// service manager at `$NOTIFY_SOCKET`: a socket path, or an abstract socket name
/// starting with `@`. `Ok(false)` when `NOTIFY_SOCKET` is not set (not run by systemd
/// with `Type=notify`, `NotifyAccess=`).
///
/// # Errors
///
/// When the datagram cannot be sent, or `NOTIFY_SOCKET` names no usable socket.
pub fn notify(state: &str) -> io::Result<bool> {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(false);
    };
    send_notification(&path, state)?;
    Ok(true)
}

#[cfg(unix)]
fn send_notification(path: &std::ffi::OsStr, state: &str) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::net::{SocketAddr as UnixAddr, UnixDatagram};

    let bytes = path.as_bytes();
    let addr = match bytes.first() {
        #[cfg(target_os = "linux")]
        Some(b'@') => {
            use std::os::linux::net::SocketAddrExt;
            UnixAddr::from_abstract_name(&bytes[1..])?
        }
        Some(b'/') => UnixAddr::from_pathname(path)?,
        _ => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("NOTIFY_SOCKET={path:?} is neither a path nor an abstract socket name"),
            ));
        }
    };
    let socket = UnixDatagram::unbound()?;
    let sent = socket.send_to_addr(state.as_bytes(), &addr)?;
    if sent != state.len() {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            "notification cut short",
        ));
    }
    Ok(())
}

#[cfg(not(unix))]
fn send_notification(_path: &std::ffi::OsStr, _state: &str) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "NOTIFY_SOCKET needs Unix sockets",
    ))
}

/// [`notify`], logging instead of failing: a service manager that cannot be told is
/// no reason to stop forwarding.
fn notify_logged(state: &str) {
    match notify(state) {
        Ok(true) => tracing::debug!(state = %state.replace('\n', " "), "notified systemd"),
        Ok(false) => {}
        Err(e) => tracing::warn!(error = %e, "cannot notify systemd (NOTIFY_SOCKET)"),
    }
}

/// Tells systemd the proxy is ready: every forward in `running` is listening.
pub fn notify_ready(running: &[Registered]) {
    let mut status = String::from("Forwarding");
    for (i, r) in running.iter().enumerate() {
        let _ = write!(status, "{} {}", if i == 0 { "" } else { "," }, r.name());
    }
    notify_logged(&format!("READY=1\nSTATUS={status}"));
}

/// Tells systemd the proxy is ready, with `status` as the status line.
pub fn notify_ready_status(status: &str) {
    notify_logged(&format!("READY=1\nSTATUS={status}"));
}

/// Tells systemd the proxy is stopping: draining for up to `drain`.
pub fn notify_stopping(drain: std::time::Duration) {
    notify_logged(&format!("STOPPING=1\nSTATUS=Draining for up to {drain:?}"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_to_a_path_and_an_abstract_name() {
        use std::os::unix::net::UnixDatagram;
        let dir = std::env::temp_dir().join(format!("proxy-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify");
        let _ = std::fs::remove_file(&path);
        let server = UnixDatagram::bind(&path).unwrap();
        send_notification(path.as_os_str(), "READY=1").unwrap();
        let mut buf = [0; 64];
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
        std::fs::remove_dir_all(&dir).unwrap();

        #[cfg(target_os = "linux")]
        {
            use std::os::linux::net::SocketAddrExt;
            let name = format!("proxy-notify-test-{}", std::process::id());
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
            let server = UnixDatagram::bind_addr(&addr).unwrap();
            send_notification(format!("@{name}").as_ref(), "STOPPING=1").unwrap();
            let n = server.recv(&mut buf).unwrap();
            assert_eq!(&buf[..n], b"STOPPING=1");
        }

        let e = send_notification("relative".as_ref(), "READY=1").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    }
}
