//! UDP datagram I/O in batches: `recvmmsg`/`sendmmsg` with packet info on Linux, one
//! datagram per call elsewhere. Callers wait for readiness, then call these until
//! `WouldBlock`.

use std::io;
use std::net::{IpAddr, SocketAddr};

use tokio::net::UdpSocket;

/// Bytes per receive slot: more than the largest UDP payload (65,507 B over IPv4, 65,527 B
/// over IPv6), so a datagram that fills a slot can only be a truncated one.
pub(crate) const SLOT_SIZE: usize = 1 << 16;

/// Room for up to `slots` received datagrams and what is known of each.
#[derive(Debug)]
pub(crate) struct RecvBatch {
    buf: Buffer,
    meta: Box<[RecvMeta]>,
}

/// One received datagram's length, source, destination, and whether it was cut short.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct RecvMeta {
    pub(crate) len: usize,
    pub(crate) from: Option<SocketAddr>,
    /// The address the datagram was sent to, where packet info is enabled.
    pub(crate) dst_ip: Option<IpAddr>,
    pub(crate) truncated: bool,
}

/// A datagram to send: to `to` (or the connected peer), from `src_ip` when given.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Outgoing<'a> {
    pub(crate) data: &'a [u8],
    pub(crate) to: Option<SocketAddr>,
    pub(crate) src_ip: Option<IpAddr>,
}

/// A batch's slots: mapped from the kernel on Linux (see [`Region`](super::region)).
#[cfg(target_os = "linux")]
type Buffer = super::region::Region;
#[cfg(not(target_os = "linux"))]
type Buffer = Box<[u8]>;

#[cfg(target_os = "linux")]
fn zeroed(len: usize) -> Buffer {
    super::region::Region::zeroed(len)
}

#[cfg(not(target_os = "linux"))]
fn zeroed(len: usize) -> Buffer {
    vec![0; len].into()
}

impl RecvBatch {
    pub(crate) fn new(slots: usize) -> Self {
        let slots = slots.clamp(1, MAX_BATCH);
        RecvBatch {
            buf: zeroed(slots * SLOT_SIZE),
            meta: vec![RecvMeta::default(); slots].into(),
        }
    }

    pub(crate) fn slots(&self) -> usize {
        self.meta.len()
    }

    pub(crate) fn slot_size(&self) -> usize {
        SLOT_SIZE
    }

    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    pub(crate) fn buf_mut(&mut self) -> &mut [u8] {
        &mut self.buf
    }

    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    pub(crate) fn meta_mut(&mut self) -> &mut [RecvMeta] {
        &mut self.meta
    }

    /// The `i`th datagram of the last receive.
    pub(crate) fn get(&self, i: usize) -> (&[u8], RecvMeta) {
        let meta = self.meta[i];
        let start = i * SLOT_SIZE;
        (&self.buf[start..start + meta.len], meta)
    }
}

#[cfg(target_os = "linux")]
pub(crate) use super::linux_udp::MAX_BATCH;

/// Most datagrams moved by one call.
#[cfg(not(target_os = "linux"))]
pub(crate) const MAX_BATCH: usize = 64;

/// Whether this platform may segment sends ([`send_segments`]).
pub(crate) const SEGMENTATION: bool = cfg!(target_os = "linux");

#[cfg(target_os = "linux")]
pub(crate) use super::linux_udp::{MAX_SEGMENTED_BYTES, MAX_SEGMENTS};

/// Most datagrams one segmented send carries.
#[cfg(not(target_os = "linux"))]
pub(crate) const MAX_SEGMENTS: usize = 64;

/// Most payload bytes one segmented send carries.
#[cfg(not(target_os = "linux"))]
pub(crate) const MAX_SEGMENTED_BYTES: usize = 65_507;

/// Sends equal-sized `segments` (the last may be shorter) in one call, as that many
/// datagrams, with UDP segmentation offload; all or none. `Unsupported` where the
/// platform has none.
pub(crate) fn send_segments(
    socket: &UdpSocket,
    segments: &[&[u8]],
    to: Option<SocketAddr>,
    src_ip: Option<IpAddr>,
) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsFd;
        super::linux_udp::send_segments(socket.as_fd(), segments, to, src_ip)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (socket, segments, to, src_ip);
        Err(io::ErrorKind::Unsupported.into())
    }
}

/// Whether a segmented send failed because the kernel or the route cannot segment (an
/// old kernel, or a device without checksum offload), so batches should be used instead.
pub(crate) fn segmentation_unsupported(e: &io::Error) -> bool {
    #[cfg(target_os = "linux")]
    {
        [libc::EIO, libc::EINVAL, libc::ENOPROTOOPT, libc::EOPNOTSUPP]
            .contains(&e.raw_os_error().unwrap_or(0))
    }
    #[cfg(not(target_os = "linux"))]
    {
        e.kind() == io::ErrorKind::Unsupported
    }
}

/// Sets a socket's receive and send buffers to `bytes` each, past the system limits where
/// privileged (Linux), else as far as they allow.
pub(crate) fn set_buffers(socket: &socket2::Socket, bytes: usize) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsFd;
        super::linux_udp::set_buffers(socket.as_fd(), bytes)
    }
    #[cfg(not(target_os = "linux"))]
    {
        socket.set_recv_buffer_size(bytes)?;
        socket.set_send_buffer_size(bytes)
    }
}

/// Prepares a listening socket to report destination addresses, so replies can leave from
/// the address a client sent to. Only wildcard listeners need it.
pub(crate) fn enable_dst_info(socket: &socket2::Socket, ipv6: bool) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsFd;
        super::linux_udp::set_recv_pktinfo(socket.as_fd(), ipv6)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (socket, ipv6);
        Ok(())
    }
}

/// What one [`recv`] brought.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Received {
    /// Datagrams now in the batch.
    pub(crate) count: usize,
    /// The socket had no more: tokio's readiness is cleared already, so the caller waits
    /// for the next datagram without another receive call to learn that.
    pub(crate) drained: bool,
}

/// Receives up to `max` datagrams without blocking; `WouldBlock` when none is waiting.
///
/// Fewer than `max` means the socket is empty: readiness is then cleared at once, race-
/// free, since tokio clears only the readiness it saw before the call.
pub(crate) fn recv(socket: &UdpSocket, batch: &mut RecvBatch, max: usize) -> io::Result<Received> {
    let max = max.min(batch.slots()).min(MAX_BATCH);
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsFd;
        let mut short = None;
        let received = socket.try_io(tokio::io::Interest::READABLE, || {
            let n = super::linux_udp::recv(socket.as_fd(), batch, max)?;
            if n < max {
                short = Some(n);
                return Err(io::ErrorKind::WouldBlock.into());
            }
            Ok(n)
        });
        match (received, short) {
            (Ok(count), _) => Ok(Received {
                count,
                drained: false,
            }),
            (Err(e), Some(count)) if e.kind() == io::ErrorKind::WouldBlock => Ok(Received {
                count,
                drained: true,
            }),
            (Err(e), _) => Err(e),
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let mut n = 0;
        while n < max {
            let start = n * SLOT_SIZE;
            match socket.try_recv_from(&mut batch.buf[start..start + SLOT_SIZE]) {
                Ok((len, from)) => {
                    batch.meta[n] = RecvMeta {
                        len,
                        from: Some(from),
                        dst_ip: None,
                        truncated: len == SLOT_SIZE,
                    };
                    n += 1;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && n > 0 => {
                    return Ok(Received {
                        count: n,
                        drained: true,
                    });
                }
                Err(e) => return Err(e),
            }
        }
        Ok(Received {
            count: n,
            drained: false,
        })
    }
}

/// Sends as many of `msgs` as the socket takes without blocking: at least one, or the
/// error of the first (`WouldBlock` when its send buffer is full).
///
/// The system call is made whatever tokio last saw of the socket's readiness: a UDP
/// sender that never waits for `writable` would otherwise drop datagrams on a fresh
/// socket whose first readiness event has not been seen yet.
pub(crate) fn send(socket: &UdpSocket, msgs: &[Outgoing<'_>]) -> io::Result<usize> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsFd;
        super::linux_udp::send(socket.as_fd(), msgs)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let sock = socket2::SockRef::from(socket);
        let mut n = 0;
        for msg in msgs {
            let sent = match msg.to {
                Some(to) => sock.send_to(msg.data, &to.into()),
                None => sock.send(msg.data),
            };
            match sent {
                Ok(_) => n += 1,
                Err(e) if n == 0 => return Err(e),
                Err(_) => break,
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn batches_keep_boundaries_sizes_and_sources() {
        let a = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let to = b.local_addr().unwrap();
        let big = vec![7u8; 65_507];
        let msgs = [
            Outgoing {
                data: b"",
                to: Some(to),
                src_ip: None,
            },
            Outgoing {
                data: b"one",
                to: Some(to),
                src_ip: None,
            },
            Outgoing {
                data: &big,
                to: Some(to),
                src_ip: None,
            },
        ];
        let mut sent = 0;
        while sent < msgs.len() {
            match send(&a, &msgs[sent..]) {
                Ok(n) => sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => tokio::task::yield_now().await,
                Err(e) => panic!("{e}"),
            }
        }
        let mut batch = RecvBatch::new(8);
        let mut got: Vec<(Vec<u8>, RecvMeta)> = Vec::new();
        while got.len() < 3 {
            b.readable().await.unwrap();
            match recv(&b, &mut batch, 8) {
                Ok(r) => got.extend((0..r.count).map(|i| {
                    let (d, m) = batch.get(i);
                    (d.to_vec(), m)
                })),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(got[0].0, b"");
        assert_eq!(got[1].0, b"one");
        assert_eq!(got[2].0, big);
        for (_, m) in &got {
            assert_eq!(m.from, Some(a.local_addr().unwrap()));
            assert!(!m.truncated);
        }
    }

    /// One segmented send arrives as that many datagrams, boundaries and bytes intact, the
    /// shorter last one included; a run that breaks the rules is refused, not mangled.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn segmented_sends_arrive_as_separate_datagrams() {
        let a = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let to = b.local_addr().unwrap();
        let mut payloads: Vec<Vec<u8>> = (0..20u8).map(|i| vec![i; 1000]).collect();
        payloads.push(vec![99; 300]);
        let segments: Vec<&[u8]> = payloads.iter().map(Vec::as_slice).collect();
        send_segments(&a, &segments, Some(to), None).unwrap();
        let mut batch = RecvBatch::new(32);
        let mut got = Vec::new();
        while got.len() < payloads.len() {
            b.readable().await.unwrap();
            if let Ok(r) = recv(&b, &mut batch, 32) {
                got.extend((0..r.count).map(|i| batch.get(i).0.to_vec()));
            }
        }
        assert_eq!(got, payloads);

        // A longer segment after the first, or too many in all: refused.
        let uneven: [&[u8]; 2] = [b"ab", b"abc"];
        let e = send_segments(&a, &uneven, Some(to), None).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        let many = vec![&b"x"[..]; MAX_SEGMENTS + 1];
        assert!(send_segments(&a, &many, Some(to), None).is_err());
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn packet_info_reports_and_sets_the_local_address() {
        use std::os::fd::AsFd;
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).unwrap();
        s.bind(&"0.0.0.0:0".parse::<SocketAddr>().unwrap().into())
            .unwrap();
        s.set_nonblocking(true).unwrap();
        super::super::linux_udp::set_recv_pktinfo(s.as_fd(), false).unwrap();
        let server = UdpSocket::from_std(s.into()).unwrap();
        let port = server.local_addr().unwrap().port();
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        // Sent to 127.0.0.2: the reply must come from 127.0.0.2, not the route's default.
        client.send_to(b"hi", ("127.0.0.2", port)).await.unwrap();
        let mut batch = RecvBatch::new(1);
        let meta = loop {
            server.readable().await.unwrap();
            if recv(&server, &mut batch, 1).is_ok_and(|r| r.count == 1) {
                break batch.get(0).1;
            }
        };
        assert_eq!(meta.dst_ip, Some("127.0.0.2".parse().unwrap()));
        let reply = Outgoing {
            data: b"yo",
            to: meta.from,
            src_ip: meta.dst_ip,
        };
        assert_eq!(send(&server, &[reply]).unwrap(), 1);
        let mut buf = [0; 8];
        let (n, from) = client.recv_from(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"yo");
        assert_eq!(from, SocketAddr::from(([127, 0, 0, 2], port)));
    }
}
