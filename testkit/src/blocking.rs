//! The blocking flavour, for tests that drive a process (the `proxy` binary) from plain
//! threads: TCP and UDP echo servers on threads of their own, on ports the kernel chose,
//! stopped when they drop; and clients with a deadline ([`PROMPT`]) on every operation.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::wait::PROMPT;

// ===== servers =====

/// A threaded TCP echo server: each connection first gets a greeting (when there is one),
/// then back what it sends, and a FIN for a FIN. It counts the connections it accepted.
/// Stops accepting on drop.
pub struct Echo {
    /// The address it listens on.
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    accepted: Arc<AtomicUsize>,
}

impl Echo {
    /// An echo server on `ip`, on a port the kernel chose.
    pub fn start(ip: &str) -> Echo {
        Echo::serve(TcpListener::bind((ip, 0)).expect("bind echo server"))
    }

    /// An echo server on `listener`.
    pub fn serve(listener: TcpListener) -> Echo {
        Echo::serve_greeting(listener, "")
    }

    /// An echo server on `listener` that sends `greeting` first on every connection.
    pub fn serve_greeting(listener: TcpListener, greeting: &str) -> Echo {
        Echo::serve_with(listener, greeting.to_owned(), |_| false)
    }

    /// Like [`serve_greeting`](Echo::serve_greeting), but connection `n` (from 0) is reset
    /// instead when `reset(n)`: once the client's first bytes have arrived, the socket
    /// closes with them unread, so the kernel sends an RST.
    pub fn serve_with(
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

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// How many connections it accepted so far.
    pub fn accepted(&self) -> usize {
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
/// records the source address of the last datagram, so a test sees which upstream socket
/// the proxy used. Stops on drop.
pub struct UdpEcho {
    /// The address it serves.
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    last_peer: Arc<Mutex<Option<SocketAddr>>>,
}

impl UdpEcho {
    /// A UDP echo server on `ip`, on a port the kernel chose.
    pub fn start(ip: &str) -> UdpEcho {
        UdpEcho::serve(UdpSocket::bind((ip, 0)).expect("bind UDP echo server"))
    }

    /// A UDP echo server on `socket`.
    pub fn serve(socket: UdpSocket) -> UdpEcho {
        let addr = socket.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let last_peer = Arc::new(Mutex::new(None));
        let (stopping, seen) = (stop.clone(), last_peer.clone());
        thread::spawn(move || {
            // Ends when `UdpEcho` drops: it sets `stop` and sends a datagram to wake us.
            let mut buf = vec![0u8; 65_536];
            loop {
                let received = socket.recv_from(&mut buf);
                if stopping.load(Ordering::SeqCst) {
                    return;
                }
                let Ok((n, from)) = received else { continue };
                *seen.lock().unwrap() = Some(from);
                let _ = socket.send_to(&buf[..n], from);
            }
        });
        UdpEcho {
            addr,
            stop,
            last_peer,
        }
    }

    /// The port it serves.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The source address of the last datagram received.
    pub fn last_peer(&self) -> SocketAddr {
        self.last_peer.lock().unwrap().expect("no datagram yet")
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

// ===== clients =====

/// A client connection with deadlines on every operation.
pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, PROMPT)
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    s.set_read_timeout(Some(PROMPT)).unwrap();
    s.set_write_timeout(Some(PROMPT)).unwrap();
    s
}

/// A client connection on which one request has been echoed: an open connection through
/// the proxy.
pub fn open_connection(addr: SocketAddr, msg: &[u8]) -> TcpStream {
    let mut conn = connect(addr);
    ping(&mut conn, msg);
    conn
}

/// A UDP client socket connected to `proxy`, with deadlines on every operation.
pub fn udp_client(proxy: SocketAddr) -> UdpSocket {
    let s = UdpSocket::bind((proxy.ip(), 0)).expect("bind UDP client");
    s.connect(proxy).expect("connect UDP client");
    s.set_read_timeout(Some(PROMPT)).unwrap();
    s.set_write_timeout(Some(PROMPT)).unwrap();
    s
}

/// Sends one datagram and returns the one that comes back; fails the test when none
/// comes within [`PROMPT`].
pub fn udp_echo(socket: &UdpSocket, data: &[u8]) -> Vec<u8> {
    socket.send(data).expect("send datagram");
    let mut buf = vec![0u8; 65_536];
    let n = socket
        .recv(&mut buf)
        .unwrap_or_else(|e| panic!("no reply to a {}-byte datagram: {e}", data.len()));
    buf.truncate(n);
    buf
}

/// Sends `data`, then a FIN, while reading everything back until EOF; returns what came
/// back. Writing runs on a second thread so neither side's buffers can deadlock.
pub fn echo_through(stream: TcpStream, data: &[u8]) -> Vec<u8> {
    try_echo_through(stream, data).expect("echo through the proxy")
}

/// [`echo_through`] that returns I/O errors instead of failing the test.
pub fn try_echo_through(stream: TcpStream, data: &[u8]) -> io::Result<Vec<u8>> {
    let mut writer = stream.try_clone()?;
    let data = data.to_vec();
    let sending = thread::spawn(move || -> io::Result<()> {
        writer.write_all(&data)?;
        writer.shutdown(Shutdown::Write)
    });
    let mut back = Vec::new();
    let read = (&stream).read_to_end(&mut back);
    // A reset stops the writer too; report the reader's error first.
    read?;
    sending.join().unwrap()?;
    Ok(back)
}

/// One request and its echo on an open connection.
pub fn ping(stream: &mut TcpStream, msg: &[u8]) {
    stream.write_all(msg).expect("write");
    let mut back = vec![0; msg.len()];
    stream.read_exact(&mut back).expect("read echo");
    assert_eq!(back, msg);
}

/// Reads until EOF or an error (a reset), failing on data or when nothing happens within
/// `timeout`; returns when the connection ended.
pub fn expect_closed(stream: &mut TcpStream, timeout: Duration) -> Instant {
    stream.set_read_timeout(Some(timeout)).unwrap();
    let mut buf = [0u8; 64];
    match stream.read(&mut buf) {
        Ok(0) => {}
        Ok(n) => panic!("expected the connection to close, got {n} bytes"),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            panic!("connection still open after {timeout:?}")
        }
        Err(_) => {} // reset
    }
    Instant::now()
}
