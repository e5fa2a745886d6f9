//! Helpers for `tests/dns.rs`: TCP servers that say who they are, and clients that ask
//! them through a forwarder. The DNS server itself is the kit's
//! [`Dnsmasq`](proxy_testkit::dns::Dnsmasq).

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// How long one client exchange through the forwarder may take.
pub(crate) const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(5);

// ===== identity servers =====

/// TCP servers, one per address, that greet each connection with their own IP address on
/// one line and then echo what they receive, so a client knows which one it reached.
#[derive(Debug)]
pub(crate) struct IdentityServers {
    port: u16,
    tasks: Vec<JoinHandle<()>>,
}

impl IdentityServers {
    /// Servers on every one of `ips`, all on the same port chosen by the kernel.
    pub(crate) async fn start(ips: &[IpAddr]) -> Self {
        let mut last_error = None;
        for _ in 0..10 {
            match bind_same_port(ips).await {
                Ok(listeners) => {
                    let port = listeners[0].local_addr().expect("local_addr").port();
                    let tasks = listeners
                        .into_iter()
                        .map(|l| tokio::spawn(serve(l)))
                        .collect();
                    return IdentityServers { port, tasks };
                }
                Err(e) => last_error = Some(e),
            }
        }
        panic!("cannot bind {ips:?} on one port: {last_error:?}");
    }

    /// The port all servers listen on.
    pub(crate) fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for IdentityServers {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

async fn bind_same_port(ips: &[IpAddr]) -> io::Result<Vec<TcpListener>> {
    let first = TcpListener::bind(SocketAddr::new(ips[0], 0)).await?;
    let port = first.local_addr()?.port();
    let mut listeners = vec![first];
    for ip in &ips[1..] {
        listeners.push(TcpListener::bind(SocketAddr::new(*ip, port)).await?);
    }
    Ok(listeners)
}

async fn serve(listener: TcpListener) {
    let me = listener.local_addr().expect("local_addr").ip();
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            if stream
                .write_all(format!("{me}\n").as_bytes())
                .await
                .is_err()
            {
                return;
            }
            let (mut r, mut w) = stream.split();
            let _ = tokio::io::copy(&mut r, &mut w).await;
            let _ = w.shutdown().await;
        });
    }
}

/// Connects through `proxy`, reads the greeting of the server it reached, checks that a
/// payload comes back intact, and returns the server's identity (its IP address).
pub(crate) async fn ask(proxy: SocketAddr) -> io::Result<String> {
    tokio::time::timeout(EXCHANGE_TIMEOUT, async {
        let mut stream = TcpStream::connect(proxy).await?;
        let (r, mut w) = stream.split();
        let mut r = BufReader::new(r);
        let mut greeting = String::new();
        r.read_line(&mut greeting).await?;
        if !greeting.ends_with('\n') {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("connection closed before a greeting (got {greeting:?})"),
            ));
        }
        let payload = b"ping through the proxy\n";
        w.write_all(payload).await?;
        w.shutdown().await?;
        let mut echoed = Vec::new();
        r.read_to_end(&mut echoed).await?;
        if echoed != payload {
            return Err(io::Error::other(format!(
                "payload came back as {:?}",
                String::from_utf8_lossy(&echoed)
            )));
        }
        Ok(greeting.trim_end().to_owned())
    })
    .await
    .unwrap_or_else(|_| {
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "exchange timed out",
        ))
    })
}

/// Connects through `proxy` and expects the proxy to close the connection cleanly (a FIN,
/// read as end of file) without sending anything.
pub(crate) async fn expect_clean_close(proxy: SocketAddr) {
    let mut stream = TcpStream::connect(proxy)
        .await
        .unwrap_or_else(|e| panic!("connecting to the forwarder at {proxy}: {e}"));
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(EXCHANGE_TIMEOUT, stream.read(&mut buf))
        .await
        .unwrap_or_else(|_| {
            panic!("the forwarder kept the connection open for {EXCHANGE_TIMEOUT:?}")
        });
    match read {
        Ok(0) => {}
        Ok(n) => panic!(
            "expected EOF, got {n} bytes: {:?}",
            String::from_utf8_lossy(&buf[..n])
        ),
        Err(e) => panic!("expected a clean close (EOF), got an error: {e}"),
    }
}
