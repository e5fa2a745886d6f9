//! TCP upstreams of the async (tokio) tests, on loopback ports the kernel chose: a
//! [`Server`] running a handler per connection, echo servers, recording servers, and
//! servers that greet with who they are. Each stops, with its connections, when dropped.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};

use crate::client::read_all;
use crate::net::{v4_any_port, v6_any_port};

/// A listener on `127.0.0.1` and a kernel-chosen port.
pub async fn listener() -> TcpListener {
    TcpListener::bind(v4_any_port())
        .await
        .expect("bind 127.0.0.1:0")
}

/// A listener on `[::1]` and a kernel-chosen port, or `None` when the host has no IPv6.
pub async fn listener_v6() -> Option<TcpListener> {
    TcpListener::bind(v6_any_port()).await.ok()
}

/// A test server: accepts on a loopback listener and runs a handler per connection. The
/// server and every connection stop when it is dropped.
#[derive(Debug)]
pub struct Server {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    active: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Server {
    /// Serves `listener`, running `handler` on each accepted connection.
    pub fn spawn<F, Fut>(listener: TcpListener, handler: F) -> Server
    where
        F: Fn(TcpStream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let addr = listener.local_addr().expect("local_addr");
        let accepted = Arc::new(AtomicUsize::new(0));
        let active = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn({
            let accepted = accepted.clone();
            let active = active.clone();
            async move {
                // Dropped (aborting every connection) when the server task is aborted.
                let mut conns = JoinSet::new();
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        // A connection that failed before it was accepted.
                        tokio::task::yield_now().await;
                        continue;
                    };
                    accepted.fetch_add(1, SeqCst);
                    active.fetch_add(1, SeqCst);
                    let guard = ActiveGuard(active.clone());
                    let conn = handler(stream);
                    conns.spawn(async move {
                        let _guard = guard;
                        conn.await;
                    });
                    while conns.try_join_next().is_some() {}
                }
            }
        });
        Server {
            addr,
            accepted,
            active,
            task,
        }
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(SeqCst)
    }

    /// Connections whose handler has not finished (and whose socket is still open).
    pub fn active(&self) -> usize {
        self.active.load(SeqCst)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct ActiveGuard(Arc<AtomicUsize>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, SeqCst);
    }
}

/// An echo server on `listener`: writes back everything it reads, then a FIN after the
/// client's FIN.
pub fn echo(listener: TcpListener) -> Server {
    Server::spawn(listener, echo_stream)
}

/// An echo server on `127.0.0.1` and a kernel-chosen port.
pub async fn echo_server() -> Server {
    echo(listener().await)
}

/// Echoes `stream` until its FIN, then sends a FIN; an error (a reset) just closes. The
/// handler of [`echo`], for servers of their own.
pub async fn echo_stream(mut stream: TcpStream) {
    let mut buf = vec![0; 64 << 10];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) => {
                let _ = stream.shutdown().await;
                return;
            }
            Ok(n) => {
                if stream.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
            Err(_) => return,
        }
    }
}

/// What a recording server read on one connection.
#[derive(Debug)]
pub struct Recorded {
    /// Every byte, in order.
    pub data: Vec<u8>,
    /// How reading ended: `Ok` at a FIN, else the error's kind.
    pub end: Result<(), io::ErrorKind>,
}

/// A server that reads each connection to its end without writing, then reports what it
/// read on the returned channel and closes.
pub fn recorder(listener: TcpListener) -> (Server, mpsc::UnboundedReceiver<Recorded>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let server = Server::spawn(listener, move |mut stream| {
        let tx = tx.clone();
        async move {
            let (data, end) = read_all(&mut stream).await;
            let _ = tx.send(Recorded {
                data,
                end: end.map_err(|e| e.kind()),
            });
        }
    });
    (server, rx)
}

// ===== identity servers =====

/// TCP servers, one per address, that greet each connection with their own IP address on
/// one line and then echo what they receive, so a client knows which one it reached.
#[derive(Debug)]
pub struct IdentityServers {
    port: u16,
    // Held for their `Drop`, which stops them.
    _servers: Vec<Server>,
}

impl IdentityServers {
    /// Servers on every one of `ips`, all on the same port chosen by the kernel.
    pub async fn start(ips: &[IpAddr]) -> Self {
        let mut last_error = None;
        for _ in 0..10 {
            match bind_same_port(ips).await {
                Ok(listeners) => {
                    let port = listeners[0].local_addr().expect("local_addr").port();
                    let servers = listeners.into_iter().map(identity).collect();
                    return IdentityServers {
                        port,
                        _servers: servers,
                    };
                }
                Err(e) => last_error = Some(e),
            }
        }
        panic!("cannot bind {ips:?} on one port: {last_error:?}");
    }

    /// The port all servers listen on.
    pub fn port(&self) -> u16 {
        self.port
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

/// A server on `listener` that greets each connection with its IP address on one line,
/// then echoes it.
fn identity(listener: TcpListener) -> Server {
    let me = listener.local_addr().expect("local_addr").ip();
    Server::spawn(listener, move |mut stream| async move {
        if stream.write_all(format!("{me}\n").as_bytes()).await.is_ok() {
            echo_stream(stream).await;
        }
    })
}
