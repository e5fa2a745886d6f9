//! Helpers for `tests/dns.rs`: clients that ask the kit's
//! [`IdentityServers`](proxy_testkit::echo::IdentityServers) who they are through a
//! forwarder. The DNS server itself is the kit's [`Dnsmasq`](proxy_testkit::dns::Dnsmasq).

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpStream;

/// How long one client exchange through the forwarder may take.
pub(crate) const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(5);

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
