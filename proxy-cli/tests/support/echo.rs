//! The upstreams of the tests: TCP and UDP echo servers on threads of their own, on ports
//! the kernel chose, stopped when they drop.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use super::proxy::PROMPT;

/// A threaded TCP echo server: each connection first gets a greeting (when there is one),
/// then back what it sends, and a FIN for a FIN. It counts the connections it accepted.
/// Stops accepting on drop.
pub(crate) struct Echo {
    pub(crate) addr: SocketAddr,
    stop: Arc<AtomicBool>,
    accepted: Arc<AtomicUsize>,
}

impl Echo {
    /// An echo server on `ip`, on a port the kernel chose.
    pub(crate) fn start(ip: &str) -> Echo {
        Echo::serve(TcpListener::bind((ip, 0)).expect("bind echo server"))
    }

    /// An echo server on `listener`.
    pub(crate) fn serve(listener: TcpListener) -> Echo {
        Echo::serve_greeting(listener, "")
    }

    /// An echo server on `listener` that sends `greeting` first on every connection.
    pub(crate) fn serve_greeting(listener: TcpListener, greeting: &str) -> Echo {
        Echo::serve_with(listener, greeting.to_owned(), |_| false)
    }

    /// Like [`serve_greeting`](Echo::serve_greeting), but connection `n` (from 0) is reset
    /// instead when `reset(n)`: once the client's first bytes have arrived, the socket
    /// closes with them unread, so the kernel sends an RST.
    pub(crate) fn serve_with(
        listener: TcpListener,
        greeting: String,
        reset: impl Fn(usize) -> bool + Send + 'static,
    ) -> Echo {
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicUsize::new(0));
        let (stopping, count) = (stop.clone(), accepted.clone());
        thread::spawn(move || {
            // Ends when `Echo` drops: it sets `stop` and connects once to wake `accept`.
            for (n, conn) in listener.incoming().enumerate() {
                if stopping.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(mut conn) = conn else { continue };
                count.fetch_add(1, Ordering::SeqCst);
                if reset(n) {
                    conn.set_read_timeout(Some(PROMPT)).unwrap();
                    let _ = conn.peek(&mut [0u8; 1]);
                    drop(conn);
                    continue;
                }
                let greeting = greeting.clone();
                thread::spawn(move || {
                    if conn.write_all(greeting.as_bytes()).is_ok() {
                        echo(conn);
                    }
                });
            }
        });
        Echo {
            addr,
            stop,
            accepted,
        }
    }

    pub(crate) fn port(&self) -> u16 {
        self.addr.port()
    }

    /// How many connections it accepted so far.
    pub(crate) fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
    }
}

/// Echoes until EOF or an error; then sends a FIN. A connection left open by a killed
/// proxy ends when the kernel closes the proxy's socket.
fn echo(mut conn: TcpStream) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if conn.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = conn.shutdown(Shutdown::Write);
}

/// A UDP echo server on a thread: every datagram goes back to its sender unchanged. It
/// records the source address of each datagram, so a test sees which upstream socket the
/// proxy used. Stops on drop.
pub(crate) struct UdpEcho {
    pub(crate) addr: SocketAddr,
    stop: Arc<AtomicBool>,
    peers: Arc<Mutex<Vec<SocketAddr>>>,
}

impl UdpEcho {
    /// A UDP echo server on `ip`, on a port the kernel chose.
    pub(crate) fn start(ip: &str) -> UdpEcho {
        UdpEcho::serve(UdpSocket::bind((ip, 0)).expect("bind UDP echo server"))
    }

    /// A UDP echo server on `socket`.
    pub(crate) fn serve(socket: UdpSocket) -> UdpEcho {
        let addr = socket.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let peers = Arc::new(Mutex::new(Vec::new()));
        let (stopping, seen) = (stop.clone(), peers.clone());
        thread::spawn(move || {
            // Ends when `UdpEcho` drops: it sets `stop` and sends a datagram to wake us.
            let mut buf = vec![0u8; 65_536];
            loop {
                let received = socket.recv_from(&mut buf);
                if stopping.load(Ordering::SeqCst) {
                    return;
                }
                let Ok((n, from)) = received else { continue };
                seen.lock().unwrap().push(from);
                let _ = socket.send_to(&buf[..n], from);
            }
        });
        UdpEcho { addr, stop, peers }
    }

    pub(crate) fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The source address of the last datagram received.
    pub(crate) fn last_peer(&self) -> SocketAddr {
        *self.peers.lock().unwrap().last().expect("no datagram yet")
    }
}

impl Drop for UdpEcho {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Ok(s) = UdpSocket::bind((self.addr.ip(), 0)) {
            let _ = s.send_to(b"", self.addr);
        }
    }
}
