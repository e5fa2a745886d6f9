//! The client side of the async (tokio) tests: connections, reads to the end, writes and
//! reads at once (any size works against an echo), and how a connection ended.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::data::assert_bytes;
use crate::wait::within;

/// Connects to `addr`.
pub async fn connect(addr: SocketAddr) -> TcpStream {
    TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"))
}

/// Reads until EOF or an error; returns what was read and how it ended.
pub async fn read_all(r: &mut (impl AsyncRead + Unpin)) -> (Vec<u8>, io::Result<()>) {
    let mut data = Vec::new();
    let mut buf = vec![0; 64 << 10];
    loop {
        match r.read(&mut buf).await {
            Ok(0) => return (data, Ok(())),
            Ok(n) => data.extend_from_slice(&buf[..n]),
            Err(e) => return (data, Err(e)),
        }
    }
}

/// Writes `data` then a FIN while reading everything the peer sends until its FIN;
/// returns what was read. Both halves run at once, so any size works against an echo.
pub async fn send_and_receive(stream: &mut TcpStream, data: &[u8]) -> Vec<u8> {
    let (mut r, mut w) = stream.split();
    let write = async {
        w.write_all(data).await?;
        w.shutdown().await
    };
    let (wrote, (got, end)) = tokio::join!(write, read_all(&mut r));
    wrote.expect("write to the proxy");
    end.expect("read from the proxy");
    got
}

/// Sends `data` and reads back as many bytes, checking they are the same (an echo).
pub async fn round_trip(stream: &mut TcpStream, data: &[u8]) {
    let (mut r, mut w) = stream.split();
    let mut got = vec![0; data.len()];
    let (wrote, read) = tokio::join!(w.write_all(data), r.read_exact(&mut got));
    wrote.expect("write to the proxy");
    read.expect("read the echo");
    assert_bytes("echo", &got, data);
}

/// How a read that should end the connection ended.
#[derive(Debug, PartialEq, Eq)]
pub enum End {
    /// A FIN: `read` returned 0.
    Eof,
    /// A RST.
    Reset,
}

/// Reads until the connection ends, discarding data, and says how it ended; panics on
/// another error or after `limit`.
pub async fn wait_end(stream: &mut TcpStream, limit: Duration) -> End {
    within(limit, "waiting for the connection to end", async {
        let mut buf = vec![0; 64 << 10];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) => return End::Eof,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return End::Reset,
                Err(e) => panic!("read: unexpected error {e}"),
            }
        }
    })
    .await
}

/// Makes the coming drop of `stream` send a RST.
pub fn set_reset_on_close(stream: &TcpStream) {
    socket2::SockRef::from(stream)
        .set_linger(Some(Duration::ZERO))
        .expect("SO_LINGER 0");
}
