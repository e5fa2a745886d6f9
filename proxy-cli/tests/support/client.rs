//! The clients of the tests: TCP connections and UDP sockets with deadlines on every
//! operation, and the round trips through the proxy to an echo server.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, UdpSocket};
use std::thread;
use std::time::{Duration, Instant};

use super::proxy::PROMPT;

/// A client connection with deadlines on every operation.
pub(crate) fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, PROMPT)
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    s.set_read_timeout(Some(PROMPT)).unwrap();
    s.set_write_timeout(Some(PROMPT)).unwrap();
    s
}

/// A client connection on which one request has been echoed: an open connection through
/// the proxy.
pub(crate) fn open_connection(addr: SocketAddr, msg: &[u8]) -> TcpStream {
    let mut conn = connect(addr);
    ping(&mut conn, msg);
    conn
}

/// A UDP client socket connected to `proxy`, with deadlines on every operation.
pub(crate) fn udp_client(proxy: SocketAddr) -> UdpSocket {
    let s = UdpSocket::bind((proxy.ip(), 0)).expect("bind UDP client");
    s.connect(proxy).expect("connect UDP client");
    s.set_read_timeout(Some(PROMPT)).unwrap();
    s.set_write_timeout(Some(PROMPT)).unwrap();
    s
}

/// Sends one datagram and returns the one that comes back; fails the test when none
/// comes within [`PROMPT`].
pub(crate) fn udp_echo(socket: &UdpSocket, data: &[u8]) -> Vec<u8> {
    socket.send(data).expect("send datagram");
    let mut buf = vec![0u8; 65_536];
    let n = socket
        .recv(&mut buf)
        .unwrap_or_else(|e| panic!("no reply to a {}-byte datagram: {e}", data.len()));
    buf.truncate(n);
    buf
}

/// Deterministic, non-repeating-looking bytes, different for each `seed`.
pub(crate) fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Sends `data`, then a FIN, while reading everything back until EOF; returns what came
/// back. Writing runs on a second thread so neither side's buffers can deadlock.
pub(crate) fn echo_through(stream: TcpStream, data: &[u8]) -> Vec<u8> {
    try_echo_through(stream, data).expect("echo through the proxy")
}

/// [`echo_through`] that returns I/O errors instead of failing the test.
pub(crate) fn try_echo_through(stream: TcpStream, data: &[u8]) -> io::Result<Vec<u8>> {
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
pub(crate) fn ping(stream: &mut TcpStream, msg: &[u8]) {
    stream.write_all(msg).expect("write");
    let mut back = vec![0; msg.len()];
    stream.read_exact(&mut back).expect("read echo");
    assert_eq!(back, msg);
}

/// Reads until EOF or an error (a reset), failing on data or when nothing happens within
/// `timeout`; returns when the connection ended.
pub(crate) fn expect_closed(stream: &mut TcpStream, timeout: Duration) -> Instant {
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
