//! UDP on both sides of the async (tokio) tests: echo servers that record who sent what,
//! and clients that exchange datagrams with flow control.
//!
//! UDP on loopback still drops datagrams when a receive buffer is full, so nothing here
//! sends flat out: [`Client::exchange`] keeps a small window in flight, waits for every
//! echo with a timeout, and resends what got none a bounded number of times. Nothing
//! sleeps to synchronise: waits await an event or poll a condition with a deadline.

use std::collections::HashSet;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::data::tag_of;
use crate::net::{v4_any_port, v6_any_port};
use crate::wait::within;

/// The largest UDP payload over IPv4: 65,535 less the IPv4 and UDP headers.
pub const MAX_V4: usize = 65_507;

/// The largest UDP payload over IPv6 without jumbograms: 65,535 less the UDP header.
pub const MAX_V6: usize = 65_527;

/// Receive buffers are larger than any datagram, so a datagram that grew shows.
const RECV_BUF: usize = 1 << 17;

/// How long one try of an exchange waits for its echoes.
const TRY_TIMEOUT: Duration = Duration::from_secs(1);

/// How often an exchange sends a datagram that got no echo before it gives up.
const TRIES: usize = 5;

/// At most this many bytes of payload are in flight at once (but always one datagram),
/// well within the default 208 KiB receive buffers of the proxy's sockets.
const WINDOW_BYTES: usize = 64 << 10;

/// A UDP socket bound to `addr` with 1 MiB buffers (as far as the kernel allows), so the
/// test's own side never drops a window of large datagrams.
pub fn bind(addr: SocketAddr) -> io::Result<UdpSocket> {
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    // Capped by net.core.[rw]mem_max; a smaller buffer only means more resends.
    let _ = s.set_recv_buffer_size(1 << 20);
    let _ = s.set_send_buffer_size(1 << 20);
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    UdpSocket::from_std(s.into())
}

/// Asserts that nothing holds `addr`: binding it (without `SO_REUSEADDR`) succeeds.
#[track_caller]
pub fn assert_port_free(addr: SocketAddr, what: &str) {
    if let Err(e) = std::net::UdpSocket::bind(addr) {
        panic!("{what}: {addr} is still bound: {e}");
    }
}

fn fingerprint(data: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    data.hash(&mut h);
    h.finish()
}

// ===== clients =====

/// A client socket that exchanges datagrams with an echo behind the proxy.
///
/// It remembers which datagrams it sent more than once, so a late echo of an earlier try
/// is told apart from a datagram the proxy duplicated or mixed up.
#[derive(Debug)]
pub struct Client {
    sock: UdpSocket,
    window: usize,
    resent_set: HashSet<u64>,
    /// Datagrams sent, resends included.
    pub sent: usize,
    /// Datagrams sent again because their echo did not come in time.
    pub resent: usize,
}

impl Client {
    /// A client on `addr` (port 0 for a kernel-chosen port).
    pub fn bind(addr: SocketAddr) -> Client {
        let sock = bind(addr).unwrap_or_else(|e| panic!("bind a client to {addr}: {e}"));
        Client {
            sock,
            window: 8,
            resent_set: HashSet::new(),
            sent: 0,
            resent: 0,
        }
    }

    /// A client on `127.0.0.1` and a kernel-chosen port.
    pub fn v4() -> Client {
        Client::bind(v4_any_port())
    }

    /// A client on `[::1]` and a kernel-chosen port.
    pub fn v6() -> Client {
        Client::bind(v6_any_port())
    }

    /// At most `datagrams` in flight at once (default 8).
    pub fn window(mut self, datagrams: usize) -> Client {
        self.window = datagrams.max(1);
        self
    }

    /// The client's own address, as the proxy sees it.
    pub fn local_addr(&self) -> SocketAddr {
        self.sock.local_addr().expect("local_addr")
    }

    /// Sends one datagram to `to`, expecting nothing back.
    pub async fn send_to(&mut self, to: SocketAddr, data: &[u8]) {
        self.sock
            .send_to(data, to)
            .await
            .unwrap_or_else(|e| panic!("send {} B to {to}: {e}", data.len()));
        self.sent += 1;
    }

    /// Receives one datagram; panics after `limit`.
    pub async fn recv_from(&self, limit: Duration) -> (Vec<u8>, SocketAddr) {
        let mut buf = vec![0; RECV_BUF];
        let (n, from) = within(limit, "receive a datagram", self.sock.recv_from(&mut buf))
            .await
            .expect("recv_from");
        buf.truncate(n);
        (buf, from)
    }

    /// Receives one datagram if one comes within `limit`.
    pub async fn try_recv_from(&self, limit: Duration) -> Option<(Vec<u8>, SocketAddr)> {
        let mut buf = vec![0; RECV_BUF];
        let (n, from) = tokio::time::timeout(limit, self.sock.recv_from(&mut buf))
            .await
            .ok()?
            .expect("recv_from");
        buf.truncate(n);
        Some((buf, from))
    }

    /// Sends one datagram to `to` and checks its echo comes back intact from `to`.
    pub async fn round_trip(&mut self, to: SocketAddr, data: &[u8]) {
        self.exchange(to, std::slice::from_ref(&data.to_vec()))
            .await;
    }

    /// Sends every payload to `to` and checks each comes back exactly once, byte for byte,
    /// from `to` (the address it was sent to). A few datagrams are in flight at once;
    /// those whose echo does not come within a second are sent again, a few times.
    pub async fn exchange(&mut self, to: SocketAddr, payloads: &[Vec<u8>]) {
        let mut buf = vec![0; RECV_BUF];
        let mut start = 0;
        while start < payloads.len() {
            let mut end = start + 1;
            let mut bytes = payloads[start].len();
            while end < payloads.len()
                && end - start < self.window
                && bytes + payloads[end].len() <= WINDOW_BYTES
            {
                bytes += payloads[end].len();
                end += 1;
            }
            let mut pending: Vec<usize> = (start..end).collect();
            for attempt in 0..TRIES {
                if attempt > 0 {
                    self.resent += pending.len();
                    for &k in &pending {
                        self.resent_set.insert(fingerprint(&payloads[k]));
                    }
                }
                for &k in &pending {
                    self.send_to(to, &payloads[k]).await;
                }
                let deadline = Instant::now() + TRY_TIMEOUT;
                while !pending.is_empty() {
                    let Ok(r) =
                        tokio::time::timeout_at(deadline, self.sock.recv_from(&mut buf)).await
                    else {
                        break;
                    };
                    let (n, from) = r.unwrap_or_else(|e| panic!("receive from {to}: {e}"));
                    let got = &buf[..n];
                    assert_eq!(from, to, "the source of a {n} B reply");
                    if let Some(i) = pending.iter().position(|&k| payloads[k] == got) {
                        pending.swap_remove(i);
                    } else if !self.resent_set.contains(&fingerprint(got)) {
                        let want: Vec<usize> = pending.iter().map(|&k| payloads[k].len()).collect();
                        panic!(
                            "a reply of {n} B (tag {:?}) that is none of the {} datagrams \
                             awaited (sizes {want:?}) nor a late echo of a resent one",
                            tag_of(got),
                            pending.len()
                        );
                    }
                    // Else a late echo of a datagram sent twice.
                }
                if pending.is_empty() {
                    break;
                }
            }
            let sizes: Vec<usize> = pending.iter().map(|&k| payloads[k].len()).collect();
            assert!(
                pending.is_empty(),
                "no echo from {to} of datagrams {pending:?} (sizes {sizes:?}) in {TRIES} tries"
            );
            start = end;
        }
    }
}

// ===== upstream servers =====

/// One datagram an upstream server received.
#[derive(Clone, Debug)]
pub struct Seen {
    /// Its source: the proxy's upstream socket of one session.
    pub from: SocketAddr,
    /// Its length.
    pub len: usize,
    /// Its first 8 bytes (fewer if shorter): the tag of a [`tagged`](crate::data::tagged) datagram.
    pub head: Vec<u8>,
}

/// A datagram to send back at a time: when, to whom, what.
type Due = (Instant, SocketAddr, Vec<u8>);

/// Echoes every datagram on `sock` for ever (until the task is aborted); an error queued
/// by an earlier send only delays the next read a little.
pub async fn echo_datagrams(sock: UdpSocket) {
    serve(Arc::new(sock), None, None).await;
}

/// Receives datagrams on `sock` for ever, records each in `log` (when there is one), and
/// sends it back at once or, with `delayed`, after the delay through the answering task.
async fn serve(
    sock: Arc<UdpSocket>,
    log: Option<Arc<Mutex<Vec<Seen>>>>,
    delayed: Option<(Duration, mpsc::UnboundedSender<Due>)>,
) {
    let mut buf = vec![0; RECV_BUF];
    loop {
        let Ok((n, from)) = sock.recv_from(&mut buf).await else {
            // An error queued by an earlier send; the next read goes on.
            tokio::time::sleep(Duration::from_millis(1)).await;
            continue;
        };
        if let Some(log) = &log {
            log.lock().unwrap().push(Seen {
                from,
                len: n,
                head: buf[..n.min(8)].to_vec(),
            });
        }
        match &delayed {
            None => {
                let _ = sock.send_to(&buf[..n], from).await;
            }
            Some((delay, due)) => {
                let _ = due.send((Instant::now() + *delay, from, buf[..n].to_vec()));
            }
        }
    }
}

/// A UDP echo server that records every datagram's source. Stops when dropped.
#[derive(Debug)]
pub struct UdpServer {
    addr: SocketAddr,
    log: Arc<Mutex<Vec<Seen>>>,
    task: JoinHandle<()>,
}

impl UdpServer {
    /// An echo server on `sock`.
    pub fn echo(sock: UdpSocket) -> UdpServer {
        UdpServer::spawn(sock, None)
    }

    /// An echo server on `sock` that answers each datagram `delay` after it came, in the
    /// order they came: an upstream slower than the proxy's session idle timeout.
    pub fn echo_after(sock: UdpSocket, delay: Duration) -> UdpServer {
        UdpServer::spawn(sock, Some(delay))
    }

    fn spawn(sock: UdpSocket, delay: Option<Duration>) -> UdpServer {
        let addr = sock.local_addr().expect("local_addr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let sock = Arc::new(sock);
        let delayed = delay.map(|delay| {
            // The answering task ends when the receiving one (which holds the sender) does.
            let (due_tx, mut due_rx) = mpsc::unbounded_channel::<Due>();
            let sock = sock.clone();
            tokio::spawn(async move {
                while let Some((due, to, data)) = due_rx.recv().await {
                    tokio::time::sleep_until(due).await;
                    let _ = sock.send_to(&data, to).await;
                }
            });
            (delay, due_tx)
        });
        let task = tokio::spawn(serve(sock, Some(log.clone()), delayed));
        UdpServer { addr, log, task }
    }

    /// An echo server bound to `addr`.
    pub fn echo_on(addr: SocketAddr) -> UdpServer {
        UdpServer::echo(bind(addr).unwrap_or_else(|e| panic!("bind an echo server to {addr}: {e}")))
    }

    /// The address it serves.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every datagram received so far, in order.
    pub fn seen(&self) -> Vec<Seen> {
        self.log.lock().unwrap().clone()
    }

    /// How many datagrams it received.
    pub fn count(&self) -> usize {
        self.log.lock().unwrap().len()
    }

    /// The distinct sources, in the order they first sent.
    pub fn sources(&self) -> Vec<SocketAddr> {
        let mut out = Vec::new();
        for s in self.log.lock().unwrap().iter() {
            if !out.contains(&s.from) {
                out.push(s.from);
            }
        }
        out
    }

    /// The source of the [`tagged`](crate::data::tagged) datagram `(client, seq)`, if it arrived.
    pub fn source_of(&self, client: u32, seq: u32) -> Option<SocketAddr> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .find(|s| tag_of(&s.head) == Some((client, seq)))
            .map(|s| s.from)
    }
}

impl Drop for UdpServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
