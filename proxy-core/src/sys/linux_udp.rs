//! Linux: batched UDP I/O with `recvmmsg(2)`/`sendmmsg(2)`, and IP_PKTINFO/IPV6_PKTINFO so
//! replies leave from the address the client sent to.
//!
//! The message headers, iovecs, addresses and control buffers live on the stack for the
//! length of one call; nothing holding a raw pointer outlives it.
#![allow(unsafe_code)]

use std::io;
use std::mem::{self, MaybeUninit};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, BorrowedFd};

use super::udp::{Outgoing, RecvBatch, RecvMeta};

/// Most datagrams moved by one system call.
pub(crate) const MAX_BATCH: usize = 64;

/// The room a control message with a `payload`-byte body takes (`CMSG_SPACE`).
const fn cmsg_space(payload: usize) -> usize {
    // SAFETY: CMSG_SPACE is arithmetic on its argument; it reads no memory.
    unsafe { libc::CMSG_SPACE(payload as libc::c_uint) as usize }
}

/// The most control data one datagram carries here. Received: an IPv4 datagram on a
/// dual-stack socket gets IPV6_PKTINFO *and* IP_PKTINFO (40 + 32 bytes on 64-bit Linux).
/// Sent: a packet info message and UDP_SEGMENT (40 + 24).
const CONTROL_NEEDED: usize = {
    let v4 = cmsg_space(mem::size_of::<libc::in_pktinfo>());
    let v6 = cmsg_space(mem::size_of::<libc::in6_pktinfo>());
    let segment = cmsg_space(mem::size_of::<u16>());
    let received = v6 + v4;
    let sent = v6 + segment;
    if received > sent { received } else { sent }
};

/// The control buffer of one datagram: room for [`CONTROL_NEEDED`] with headroom (what
/// the kernel cannot fit it drops, flagging MSG_CTRUNC), aligned for `cmsghdr`.
const CONTROL_LEN: usize = 128;
const _: () = assert!(CONTROL_NEEDED + 32 <= CONTROL_LEN);

#[derive(Clone, Copy)]
#[repr(C, align(8))]
struct Control([u8; CONTROL_LEN]);

/// Asks the kernel to report each datagram's destination address (IP_PKTINFO, and
/// IPV6_RECVPKTINFO on IPv6 sockets, which may also carry IPv4 when dual-stack).
pub(crate) fn set_recv_pktinfo(socket: BorrowedFd<'_>, ipv6: bool) -> io::Result<()> {
    setsockopt_on(socket, libc::IPPROTO_IP, libc::IP_PKTINFO)?;
    if ipv6 {
        setsockopt_on(socket, libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO)?;
    }
    Ok(())
}

fn setsockopt_on(socket: BorrowedFd<'_>, level: libc::c_int, name: libc::c_int) -> io::Result<()> {
    setsockopt_int(socket, level, name, 1)
}

fn setsockopt_int(
    socket: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    let on: libc::c_int = value;
    // SAFETY: the fd is valid for the borrow; the option value points at a live c_int and
    // its size is passed with it.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            name,
            (&raw const on).cast(),
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Sets a socket's receive and send buffers to `bytes` each. With CAP_NET_ADMIN the
/// kernel's limits (`net.core.rmem_max`, `wmem_max`) are passed over (SO_RCVBUFFORCE);
/// without it the size is capped at them.
pub(crate) fn set_buffers(socket: BorrowedFd<'_>, bytes: usize) -> io::Result<()> {
    let bytes = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX / 2);
    for (force, plain) in [
        (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
        (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
    ] {
        if setsockopt_int(socket, libc::SOL_SOCKET, force, bytes).is_err() {
            setsockopt_int(socket, libc::SOL_SOCKET, plain, bytes)?;
        }
    }
    Ok(())
}

/// Receives up to `max` datagrams (at most the batch's slots and [`MAX_BATCH`]) without
/// blocking. Returns how many arrived; `WouldBlock` when none is waiting.
pub(crate) fn recv(socket: BorrowedFd<'_>, batch: &mut RecvBatch, max: usize) -> io::Result<usize> {
    let n = max.min(batch.slots()).min(MAX_BATCH);
    if n == 0 {
        return Ok(0);
    }
    let slot = batch.slot_size();
    // Only the first `n` entries are initialised (and zeroed), not the whole arrays.
    let mut hdrs = [const { MaybeUninit::<libc::mmsghdr>::uninit() }; MAX_BATCH];
    let mut iovs = [const { MaybeUninit::<libc::iovec>::uninit() }; MAX_BATCH];
    let mut names = [const { MaybeUninit::<libc::sockaddr_storage>::zeroed() }; MAX_BATCH];
    let mut controls = [const { MaybeUninit::<Control>::uninit() }; MAX_BATCH];
    let base = batch.buf_mut().as_mut_ptr();
    for i in 0..n {
        let iov = iovs[i].write(libc::iovec {
            // SAFETY: slot i lies inside the batch buffer, which holds `slots` slots.
            iov_base: unsafe { base.add(i * slot) }.cast(),
            iov_len: slot,
        });
        // SAFETY: all-zero is a valid value for this plain C struct.
        let hdr = &mut hdrs[i].write(unsafe { mem::zeroed() }).msg_hdr;
        hdr.msg_name = names[i].as_mut_ptr().cast();
        hdr.msg_namelen = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        hdr.msg_iov = iov;
        hdr.msg_iovlen = 1;
        hdr.msg_control = controls[i].as_mut_ptr().cast();
        hdr.msg_controllen = mem::size_of::<Control>() as _;
    }
    // SAFETY: the first `n` headers point at live, writable iovecs (into the batch buffer),
    // names and control buffers on this stack frame, each with its true size; the kernel
    // writes at most that much. The fd is valid for the borrow.
    let got = unsafe {
        libc::recvmmsg(
            socket.as_raw_fd(),
            hdrs.as_mut_ptr().cast(),
            n as _,
            libc::MSG_DONTWAIT as _,
            std::ptr::null_mut(),
        )
    };
    if got < 0 {
        return Err(io::Error::last_os_error());
    }
    let got = got as usize;
    for i in 0..got {
        // SAFETY: header i was initialised above, and the kernel filled it in.
        let h = unsafe { hdrs[i].assume_init_ref() };
        debug_assert!(
            h.msg_hdr.msg_flags & libc::MSG_CTRUNC == 0,
            "the control buffer ({CONTROL_LEN} bytes) was too small"
        );
        // SAFETY: name i was zeroed, and the kernel wrote at most its size into it.
        let name = unsafe { names[i].assume_init_ref() };
        batch.meta_mut()[i] = RecvMeta {
            len: (h.msg_len as usize).min(slot),
            from: decode_addr(name, h.msg_hdr.msg_namelen),
            dst_ip: decode_pktinfo(&h.msg_hdr),
            truncated: h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0,
        };
    }
    Ok(got)
}

/// Sends `msgs` (at most [`MAX_BATCH`]) in one call, each to its address (or the connected
/// peer) and from its source IP when given. Returns how many were sent, at least one; an
/// error concerns the first unsent datagram.
pub(crate) fn send(socket: BorrowedFd<'_>, msgs: &[Outgoing<'_>]) -> io::Result<usize> {
    let n = msgs.len().min(MAX_BATCH);
    if n == 0 {
        return Ok(0);
    }
    // Only the first `n` entries are initialised, not the whole arrays.
    let mut hdrs = [const { MaybeUninit::<libc::mmsghdr>::uninit() }; MAX_BATCH];
    let mut iovs = [const { MaybeUninit::<libc::iovec>::uninit() }; MAX_BATCH];
    let mut names = [const { MaybeUninit::<libc::sockaddr_storage>::uninit() }; MAX_BATCH];
    let mut controls = [const { MaybeUninit::<Control>::uninit() }; MAX_BATCH];
    for (i, msg) in msgs.iter().take(n).enumerate() {
        let iov = iovs[i].write(libc::iovec {
            // The kernel only reads through this pointer (sendmmsg).
            iov_base: msg.data.as_ptr().cast_mut().cast(),
            iov_len: msg.data.len(),
        });
        // SAFETY: all-zero is a valid value for this plain C struct.
        let hdr = &mut hdrs[i].write(unsafe { mem::zeroed() }).msg_hdr;
        hdr.msg_iov = iov;
        hdr.msg_iovlen = 1;
        if let Some(to) = msg.to {
            // SAFETY: all-zero is a valid sockaddr_storage.
            let name = names[i].write(unsafe { mem::zeroed() });
            hdr.msg_namelen = encode_addr(&to, name);
            hdr.msg_name = (&raw mut *name).cast();
        }
        if let Some(src) = msg.src_ip {
            let control = controls[i].write(Control([0; CONTROL_LEN]));
            hdr.msg_control = (&raw mut *control).cast();
            hdr.msg_controllen = mem::size_of::<Control>() as _;
            encode_pktinfo(hdr, src);
        }
    }
    // SAFETY: the first `n` headers point at live iovecs over the callers' slices and at
    // names and control buffers on this stack frame, each with its true length; sendmmsg
    // only reads them. The fd is valid for the borrow.
    let sent = unsafe {
        libc::sendmmsg(
            socket.as_raw_fd(),
            hdrs.as_mut_ptr().cast(),
            n as _,
            libc::MSG_DONTWAIT as _,
        )
    };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(sent as usize)
}

/// Most datagrams one segmented send carries (the kernel's `UDP_MAX_SEGMENTS`).
pub(crate) const MAX_SEGMENTS: usize = 64;

/// Most payload bytes one segmented send carries: what fits in one IPv4 packet.
pub(crate) const MAX_SEGMENTED_BYTES: usize = 65_507;

/// Sends `segments` as that many datagrams in one `sendmsg` with UDP segmentation
/// offload (UDP_SEGMENT, Linux 4.18): the stack handles them as one packet and splits it
/// as late as it can. Every segment but the last must be as long as the first, the last
/// no longer; at most [`MAX_SEGMENTS`] of them and [`MAX_SEGMENTED_BYTES`] in all. They
/// all go out, or none do.
pub(crate) fn send_segments(
    socket: BorrowedFd<'_>,
    segments: &[&[u8]],
    to: Option<SocketAddr>,
    src_ip: Option<IpAddr>,
) -> io::Result<()> {
    let n = segments.len();
    let size = segments.first().map_or(0, |s| s.len());
    let total: usize = segments.iter().map(|s| s.len()).sum();
    let fits = (2..=MAX_SEGMENTS).contains(&n)
        && size > 0
        && total <= MAX_SEGMENTED_BYTES
        && segments[..n - 1].iter().all(|s| s.len() == size)
        && segments[n - 1].len() <= size;
    if !fits {
        return Err(io::ErrorKind::InvalidInput.into());
    }
    let mut iovs = [const { MaybeUninit::<libc::iovec>::uninit() }; MAX_SEGMENTS];
    for (iov, segment) in iovs.iter_mut().zip(segments) {
        iov.write(libc::iovec {
            // The kernel only reads through this pointer (sendmsg).
            iov_base: segment.as_ptr().cast_mut().cast(),
            iov_len: segment.len(),
        });
    }
    // SAFETY: all-zero is a valid value for these plain C structs.
    let mut hdr: libc::msghdr = unsafe { mem::zeroed() };
    // SAFETY: as above.
    let mut name: libc::sockaddr_storage = unsafe { mem::zeroed() };
    let mut control = Control([0; CONTROL_LEN]);
    hdr.msg_iov = iovs.as_mut_ptr().cast();
    hdr.msg_iovlen = n as _;
    if let Some(to) = to {
        hdr.msg_namelen = encode_addr(&to, &mut name);
        hdr.msg_name = (&raw mut name).cast();
    }
    hdr.msg_control = (&raw mut control).cast();
    hdr.msg_controllen = mem::size_of::<Control>() as _;
    // SAFETY: msg_control points at the zeroed, aligned CONTROL_LEN-byte buffer above,
    // which holds a packet info message (CMSG_SPACE(20) = 40 for IPv6) followed by a
    // UDP_SEGMENT one (CMSG_SPACE(2) = 24), as CONTROL_NEEDED checks at compile time;
    // CMSG_FIRSTHDR/CMSG_NXTHDR stay within msg_controllen.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&hdr);
        let mut used = 0;
        if let Some(src) = src_ip {
            used += write_pktinfo(cmsg, src);
            cmsg = libc::CMSG_NXTHDR(&hdr, cmsg);
        }
        used += write_cmsg(cmsg, libc::SOL_UDP, libc::UDP_SEGMENT, size as u16);
        hdr.msg_controllen = used as _;
    }
    // SAFETY: the header points at live iovecs over the callers' slices, and at the name
    // and control buffer above, each with its true length; sendmsg only reads them. The fd
    // is valid for the borrow.
    let sent = unsafe { libc::sendmsg(socket.as_raw_fd(), &hdr, libc::MSG_DONTWAIT) };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Writes one control message carrying `value` at `cmsg`; returns the space it takes.
///
/// # Safety
///
/// `cmsg` must point at a `cmsghdr`, aligned, with `CMSG_SPACE(size_of::<T>())` writable
/// bytes from it.
unsafe fn write_cmsg<T>(
    cmsg: *mut libc::cmsghdr,
    level: libc::c_int,
    ty: libc::c_int,
    value: T,
) -> usize {
    let len = mem::size_of::<T>() as u32;
    // SAFETY: the caller vouches for the room; the data may be unaligned for T.
    unsafe {
        (*cmsg).cmsg_level = level;
        (*cmsg).cmsg_type = ty;
        (*cmsg).cmsg_len = libc::CMSG_LEN(len) as _;
        libc::CMSG_DATA(cmsg).cast::<T>().write_unaligned(value);
        libc::CMSG_SPACE(len) as usize
    }
}

/// Writes an IP_PKTINFO (IPv4 source) or IPV6_PKTINFO control message at `cmsg`; returns
/// the space it takes.
///
/// # Safety
///
/// As for [`write_cmsg`], with room for an `in6_pktinfo`.
unsafe fn write_pktinfo(cmsg: *mut libc::cmsghdr, src: IpAddr) -> usize {
    match src {
        IpAddr::V4(ip) => {
            let info = libc::in_pktinfo {
                ipi_ifindex: 0,
                ipi_spec_dst: libc::in_addr {
                    s_addr: u32::from_ne_bytes(ip.octets()),
                },
                ipi_addr: libc::in_addr { s_addr: 0 },
            };
            // SAFETY: the caller vouches for the room.
            unsafe { write_cmsg(cmsg, libc::IPPROTO_IP, libc::IP_PKTINFO, info) }
        }
        IpAddr::V6(ip) => {
            let info = libc::in6_pktinfo {
                ipi6_addr: libc::in6_addr {
                    s6_addr: ip.octets(),
                },
                ipi6_ifindex: 0,
            };
            // SAFETY: the caller vouches for the room.
            unsafe { write_cmsg(cmsg, libc::IPPROTO_IPV6, libc::IPV6_PKTINFO, info) }
        }
    }
}

fn encode_addr(addr: &SocketAddr, storage: &mut libc::sockaddr_storage) -> libc::socklen_t {
    match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for every sockaddr type.
            unsafe { (&raw mut *storage).cast::<libc::sockaddr_in>().write(sin) };
            mem::size_of::<libc::sockaddr_in>() as libc::socklen_t
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: as above.
            unsafe { (&raw mut *storage).cast::<libc::sockaddr_in6>().write(sin6) };
            mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t
        }
    }
}

fn decode_addr(storage: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<SocketAddr> {
    let len = len as usize;
    match libc::c_int::from(storage.ss_family) {
        libc::AF_INET if len >= mem::size_of::<libc::sockaddr_in>() => {
            // SAFETY: the family says the storage holds a sockaddr_in, and it is long enough.
            let sin = unsafe { &*(&raw const *storage).cast::<libc::sockaddr_in>() };
            let ip = Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes());
            Some(SocketAddrV4::new(ip, u16::from_be(sin.sin_port)).into())
        }
        libc::AF_INET6 if len >= mem::size_of::<libc::sockaddr_in6>() => {
            // SAFETY: the family says the storage holds a sockaddr_in6, and it is long enough.
            let sin6 = unsafe { &*(&raw const *storage).cast::<libc::sockaddr_in6>() };
            let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            let port = u16::from_be(sin6.sin6_port);
            Some(SocketAddrV6::new(ip, port, sin6.sin6_flowinfo, sin6.sin6_scope_id).into())
        }
        _ => None,
    }
}

/// The destination address from a received IP_PKTINFO or IPV6_PKTINFO control message.
// `msg_controllen` is a `size_t` with glibc and a `socklen_t` with musl.
#[allow(clippy::unnecessary_cast)]
fn decode_pktinfo(hdr: &libc::msghdr) -> Option<IpAddr> {
    if hdr.msg_control.is_null() || (hdr.msg_controllen as usize) < mem::size_of::<libc::cmsghdr>()
    {
        return None;
    }
    // SAFETY: msg_control/msg_controllen describe the control buffer the kernel filled;
    // CMSG_FIRSTHDR/CMSG_NXTHDR stay within it and return null past its end.
    let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(hdr) };
    while !cmsg.is_null() {
        // SAFETY: cmsg is non-null and points at a complete cmsghdr inside the buffer.
        let c = unsafe { &*cmsg };
        match (c.cmsg_level, c.cmsg_type) {
            (libc::IPPROTO_IP, libc::IP_PKTINFO) => {
                // SAFETY: an IP_PKTINFO message carries an in_pktinfo; CMSG_DATA points at
                // it, possibly unaligned, so it is read unaligned.
                let info = unsafe {
                    libc::CMSG_DATA(cmsg)
                        .cast::<libc::in_pktinfo>()
                        .read_unaligned()
                };
                return Some(Ipv4Addr::from(info.ipi_addr.s_addr.to_ne_bytes()).into());
            }
            (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO) => {
                // SAFETY: an IPV6_PKTINFO message carries an in6_pktinfo; read unaligned.
                let info = unsafe {
                    libc::CMSG_DATA(cmsg)
                        .cast::<libc::in6_pktinfo>()
                        .read_unaligned()
                };
                let ip = Ipv6Addr::from(info.ipi6_addr.s6_addr);
                // A dual-stack socket reports IPv4 destinations as mapped addresses.
                return Some(ip.to_ipv4_mapped().map_or(IpAddr::V6(ip), IpAddr::V4));
            }
            _ => {}
        }
        // SAFETY: as for CMSG_FIRSTHDR.
        cmsg = unsafe { libc::CMSG_NXTHDR(hdr, cmsg) };
    }
    None
}

/// Writes one IP_PKTINFO (IPv4 source) or IPV6_PKTINFO control message into the header's
/// control buffer and sets its length.
fn encode_pktinfo(hdr: &mut libc::msghdr, src: IpAddr) {
    // SAFETY: the caller pointed msg_control at a zeroed, aligned CONTROL_LEN-byte buffer,
    // which holds one cmsghdr plus an in_pktinfo or in6_pktinfo (CMSG_SPACE 32 or 40).
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(hdr);
        hdr.msg_controllen = write_pktinfo(cmsg, src) as _;
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;

    use super::*;

    /// A wildcard IPv6 socket with packet info on, as the forwarder binds `[::]`.
    fn dual_stack() -> std::net::UdpSocket {
        let socket = socket2::Socket::new(
            socket2::Domain::IPV6,
            socket2::Type::DGRAM,
            Some(socket2::Protocol::UDP),
        )
        .unwrap();
        socket.set_only_v6(false).unwrap();
        socket
            .bind(&"[::]:0".parse::<SocketAddr>().unwrap().into())
            .unwrap();
        set_recv_pktinfo(socket.as_fd(), true).unwrap();
        socket.into()
    }

    fn on(ip: &str, socket: &std::net::UdpSocket) -> SocketAddr {
        SocketAddr::new(ip.parse().unwrap(), socket.local_addr().unwrap().port())
    }

    #[test]
    fn control_room_is_computed_with_headroom() {
        assert_eq!(cmsg_space(mem::size_of::<libc::in6_pktinfo>()), 40);
        assert_eq!(cmsg_space(mem::size_of::<libc::in_pktinfo>()), 32);
        assert_eq!(cmsg_space(mem::size_of::<u16>()), 24);
        assert_eq!(CONTROL_NEEDED, 72);
        assert!(mem::size_of::<Control>() >= CONTROL_NEEDED + 32);
    }

    /// An IPv4 datagram on a dual-stack socket brings both packet info messages; both fit
    /// (no MSG_CTRUNC), and the destination is read as IPv4.
    #[test]
    fn ipv4_on_a_dual_stack_socket_brings_both_packet_infos() {
        let socket = dual_stack();
        let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        sender.send_to(b"v4", on("127.0.0.3", &socket)).unwrap();
        let mut batch = RecvBatch::new(4);
        socket
            .set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        // Block until it arrives, then take it with the batched call.
        let mut peek = [0u8; 8];
        let _ = socket.peek(&mut peek);
        let n = recv(socket.as_fd(), &mut batch, 4).unwrap();
        assert_eq!(n, 1);
        let (data, meta) = (&batch.get(0).0.to_vec(), batch.get(0).1);
        assert_eq!(&data[..], b"v4");
        assert_eq!(meta.dst_ip, Some("127.0.0.3".parse().unwrap()));
        assert_eq!(
            meta.from.map(|a| a.ip().to_canonical()),
            Some("127.0.0.1".parse().unwrap())
        );
    }

    /// A segmented send from a wildcard IPv6 socket with an IPv6 source: packet info and
    /// UDP_SEGMENT together, each segment arriving whole from the chosen source.
    #[test]
    fn segments_leave_from_the_given_ipv6_source() {
        let socket = dual_stack();
        let receiver = std::net::UdpSocket::bind("[::1]:0").unwrap();
        receiver
            .set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let segments: Vec<Vec<u8>> = (0..5u8)
            .map(|i| vec![i; if i < 4 { 1200 } else { 300 }])
            .collect();
        let refs: Vec<&[u8]> = segments.iter().map(Vec::as_slice).collect();
        let sent = send_segments(
            socket.as_fd(),
            &refs,
            Some(receiver.local_addr().unwrap()),
            Some("::1".parse().unwrap()),
        );
        if let Err(e) = &sent
            && super::super::udp::segmentation_unsupported(e)
        {
            eprintln!("UDP segmentation offload unavailable here: {e}");
            return;
        }
        sent.unwrap();
        let mut buf = [0u8; 2048];
        for want in &segments {
            let (n, from) = receiver.recv_from(&mut buf).unwrap();
            assert_eq!(&buf[..n], &want[..]);
            assert_eq!(from, on("::1", &socket));
        }
    }
}
