//! Linux: an in-kernel TCP relay through a BPF socket map (`relay = sockmap`).
//!
//! A `BPF_MAP_TYPE_SOCKHASH` holds, for each relayed socket, its peer, keyed by the
//! socket's own cookie (`SO_COOKIE`). A ten-instruction `sk_skb` verdict program attached
//! to the map runs on every segment a member socket receives, looks its own cookie up and
//! redirects the bytes to the peer's send path: the relay's bytes never wake user space.
//! The program is written here as bytecode (no compiler, no libbpf at build or run time);
//! the `bpf(2)` calls go through libc.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::time::Duration;

use rustix::buffer::spare_capacity;
use rustix::event::{Timespec, epoll};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// How many sockets (two per connection) one map holds; a pair that does not fit is
/// refused, and that connection relays in user space. The buckets are allocated up front
/// (16 bytes each), members as they are added.
const MAX_SOCKETS: u32 = 1 << 16;

// From <linux/bpf.h>.
const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_MAP_DELETE_ELEM: libc::c_long = 3;
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_MAP_TYPE_SOCKHASH: u32 = 18;
const BPF_PROG_TYPE_SK_SKB: u32 = 14;
const BPF_SK_SKB_VERDICT: u32 = 38;
const BPF_SK_SKB_STREAM_VERDICT: u32 = 5;
const BPF_FUNC_GET_SOCKET_COOKIE: i32 = 46;
const BPF_FUNC_SK_REDIRECT_HASH: i32 = 72;
const BPF_PSEUDO_MAP_FD: u8 = 1;
const BPF_NOEXIST: u64 = 1;
/// `SK_PASS`: on success `bpf_sk_redirect_hash` has set the redirect; without a peer the
/// bytes stay on the socket they arrived at.
const SK_PASS: i32 = 1;

/// The size of the `bpf_attr` this code fills; the kernel takes a shorter one and checks
/// that what it does not know is zero.
const ATTR_SIZE: usize = 128;

/// A BPF socket map with the redirecting verdict program attached. Dropping it closes
/// both; sockets still in the map leave it as they close.
#[derive(Debug)]
pub(crate) struct SockMap {
    map: OwnedFd,
    _prog: OwnedFd,
}

impl SockMap {
    /// Creates the map, loads the program and attaches it.
    ///
    /// # Errors
    ///
    /// The kernel refuses: without CAP_BPF and CAP_NET_ADMIN (EPERM), without sockmap
    /// support (EINVAL), or the verifier's message for a kernel that rejects the program.
    pub(crate) fn new() -> io::Result<SockMap> {
        let mut attr = Attr::new();
        attr.u32(0, BPF_MAP_TYPE_SOCKHASH);
        attr.u32(4, 8); // key: the socket's cookie
        attr.u32(8, 4); // value: the peer's descriptor, on update
        attr.u32(12, MAX_SOCKETS);
        let map = attr.call_fd(BPF_MAP_CREATE)?;
        let prog = load_verdict(&map)?;
        let mut attr = Attr::new();
        attr.u32(0, fd_u32(&map));
        attr.u32(4, fd_u32(&prog));
        attr.u32(8, BPF_SK_SKB_VERDICT);
        if let Err(e) = attr.call(BPF_PROG_ATTACH) {
            // Before Linux 5.13 only the stream verdict exists (a parser is optional
            // from 5.10 on).
            attr.u32(8, BPF_SK_SKB_STREAM_VERDICT);
            attr.call(BPF_PROG_ATTACH).map_err(|_| e)?;
        }
        Ok(SockMap { map, _prog: prog })
    }

    /// Makes the map redirect what `from` receives to `to`'s send path.
    pub(crate) fn redirect(&self, from: Cookie, to: impl AsFd) -> io::Result<()> {
        let key = from.0;
        let value = fd_u32(&to);
        let mut attr = Attr::new();
        attr.u32(0, fd_u32(&self.map));
        attr.u64(8, std::ptr::from_ref(&key) as u64);
        attr.u64(16, std::ptr::from_ref(&value) as u64);
        attr.u64(24, BPF_NOEXIST);
        attr.call(BPF_MAP_UPDATE_ELEM)
    }

    /// Stops redirecting what the socket with `cookie` receives; the socket leaves the
    /// map (a socket the map no longer holds is not an error).
    pub(crate) fn forget(&self, cookie: Cookie) {
        let key = cookie.0;
        let mut attr = Attr::new();
        attr.u32(0, fd_u32(&self.map));
        attr.u64(8, std::ptr::from_ref(&key) as u64);
        // ENOENT: the socket closed first and left on its own.
        let _ = attr.call(BPF_MAP_DELETE_ELEM);
    }
}

/// Watches a joined pair for its ends: a private epoll instance where the two sockets
/// wait for a FIN (`EPOLLRDHUP`) or an error, and never for data, so the segments the
/// verdict relays wake nobody. Its descriptor is readable while an end is pending.
#[derive(Debug)]
pub(crate) struct Ends(OwnedFd);

impl Ends {
    pub(crate) fn new(sockets: [BorrowedFd<'_>; 2]) -> io::Result<Ends> {
        let ends = Ends(epoll::create(epoll::CreateFlags::CLOEXEC)?);
        for (i, socket) in sockets.into_iter().enumerate() {
            let data = epoll::EventData::new_u64(i as u64);
            epoll::add(&ends.0, socket, data, epoll::EventFlags::RDHUP)?;
        }
        Ok(ends)
    }

    /// What happened to each socket since the last call: `(fin, error)`; `WouldBlock`
    /// when nothing did.
    pub(crate) fn take(&self) -> io::Result<[(bool, bool); 2]> {
        let mut events: Vec<epoll::Event> = Vec::with_capacity(2);
        let none = Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        epoll::wait(&self.0, spare_capacity(&mut events), Some(&none))?;
        if events.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let mut ends = [(false, false); 2];
        for event in &events {
            let flags = event.flags;
            if let Some(end) = ends.get_mut(event.data.u64() as usize) {
                let fin = flags.intersects(epoll::EventFlags::RDHUP | epoll::EventFlags::HUP);
                *end = (fin, flags.contains(epoll::EventFlags::ERR));
            }
        }
        Ok(ends)
    }

    /// After the socket's FIN: only an error (a later reset) is reported for it.
    pub(crate) fn fin_seen(&self, socket: BorrowedFd<'_>, i: usize) -> io::Result<()> {
        let data = epoll::EventData::new_u64(i as u64);
        Ok(epoll::modify(
            &self.0,
            socket,
            data,
            epoll::EventFlags::empty(),
        )?)
    }
}

impl Ends {
    /// Registers the instance with the runtime's reactor, readable while an end is
    /// pending.
    #[allow(unsafe_code)]
    pub(crate) fn watched(self) -> io::Result<AsyncFd<Ends>> {
        // SAFETY: `Ends` owns its descriptor, which stays open and the same (its
        // `as_raw_fd` returns it every time) until the `AsyncFd` drops the `Ends`.
        unsafe { AsyncFd::register_with_interest(self, Interest::READABLE) }
            .map_err(io::Error::from)
    }
}

impl AsRawFd for Ends {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.0.as_raw_fd()
    }
}

/// A socket's cookie: the kernel's unique, never reused number for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Cookie(u64);

impl Cookie {
    pub(crate) fn of(socket: impl AsFd) -> io::Result<Cookie> {
        let mut buf = [0u8; 8];
        let len = getsockopt(&socket, libc::SOL_SOCKET, libc::SO_COOKIE, &mut buf)?;
        if len != buf.len() {
            return Err(io::Error::other("short SO_COOKIE"));
        }
        Ok(Cookie(u64::from_ne_bytes(buf)))
    }
}

/// Holds back (or lets go) the socket's data-ready callback, which for a map member runs
/// the verdict: TCP calls it only once `SO_RCVLOWAT` bytes are queued (the kernel caps
/// the mark at half the largest receive buffer, far above what arrives while a pair
/// joins). Setting the mark calls it at once when enough is queued, so letting go runs
/// the verdict over what arrived meanwhile, and over what arrived before joining.
pub(crate) fn hold(socket: impl AsFd, hold: bool) -> io::Result<()> {
    let mark: libc::c_int = if hold { libc::c_int::MAX } else { 1 };
    setsockopt(
        &socket,
        libc::SOL_SOCKET,
        libc::SO_RCVLOWAT,
        &mark.to_ne_bytes(),
    )
}

/// Byte counts of a TCP socket, from one `TCP_INFO` snapshot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct TcpCounts {
    /// Bytes received in order from the peer (its FIN, which takes a sequence number,
    /// not counted once the socket's state shows it).
    pub(crate) received: u64,
    /// Bytes written into the socket: sent once, or still waiting to be sent.
    pub(crate) written: u64,
    /// Whether the state shows the peer's FIN.
    pub(crate) fin: bool,
    /// How long ago data last arrived.
    pub(crate) idle: Duration,
}

impl TcpCounts {
    pub(crate) fn of(socket: impl AsFd) -> io::Result<TcpCounts> {
        // Offsets in `struct tcp_info` (<linux/tcp.h>); the fields used came with 4.19.
        const LAST_DATA_RECV: usize = 52;
        const BYTES_RECEIVED: usize = 128;
        const NOTSENT_BYTES: usize = 144;
        const BYTES_SENT: usize = 200;
        const BYTES_RETRANS: usize = 208;
        let mut info = [0u8; BYTES_RETRANS + 8];
        let len = getsockopt(&socket, libc::IPPROTO_TCP, libc::TCP_INFO, &mut info)?;
        if len < info.len() {
            return Err(io::Error::other("TCP_INFO lacks byte counts (Linux 4.19+)"));
        }
        // States past the peer's FIN: CLOSE_WAIT, LAST_ACK, CLOSING, TIME_WAIT.
        let fin = matches!(info[0], 8 | 9 | 11 | 6);
        let u64_at = |at: usize| u64::from_ne_bytes(info[at..at + 8].try_into().unwrap());
        let u32_at = |at: usize| u32::from_ne_bytes(info[at..at + 4].try_into().unwrap());
        Ok(TcpCounts {
            received: u64_at(BYTES_RECEIVED) - u64::from(fin),
            fin,
            written: (u64_at(BYTES_SENT) - u64_at(BYTES_RETRANS))
                + u64::from(u32_at(NOTSENT_BYTES)),
            idle: Duration::from_millis(u32_at(LAST_DATA_RECV).into()),
        })
    }
}

/// The bytes waiting to be read on a socket (SIOCINQ).
#[allow(unsafe_code)]
pub(crate) fn unread(socket: impl AsFd) -> io::Result<u64> {
    let mut n: libc::c_int = 0;
    // SAFETY: SIOCINQ (FIONREAD's number) writes one `c_int` through its pointer, which
    // points to `n`, live and writable for the call; the descriptor is borrowed.
    let rc = unsafe { libc::ioctl(socket.as_fd().as_raw_fd(), libc::FIONREAD, &mut n) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(u64::try_from(n).unwrap_or(0))
}

/// Loads the verdict program: `key = bpf_get_socket_cookie(skb);
/// bpf_sk_redirect_hash(skb, map, &key, 0); return SK_PASS;`
fn load_verdict(map: &OwnedFd) -> io::Result<OwnedFd> {
    let map = map.as_raw_fd();
    let program: [[u8; 8]; 12] = [
        insn(0xbf, 6, 1, 0, 0),                          // r6 = r1 (the skb)
        insn(0x85, 0, 0, 0, BPF_FUNC_GET_SOCKET_COOKIE), // r0 = cookie(skb)
        insn(0x7b, 10, 0, -8, 0),                        // *(u64 *)(r10 - 8) = r0
        insn(0xbf, 1, 6, 0, 0),                          // r1 = skb
        insn(0x18, 2, BPF_PSEUDO_MAP_FD, 0, map),        // r2 = map (two slots)
        insn(0, 0, 0, 0, 0),
        insn(0xbf, 3, 10, 0, 0),                        // r3 = r10
        insn(0x07, 3, 0, 0, -8),                        // r3 -= 8 (&key)
        insn(0xb7, 4, 0, 0, 0),                         // r4 = 0 (to the peer's egress)
        insn(0x85, 0, 0, 0, BPF_FUNC_SK_REDIRECT_HASH), // redirect
        insn(0xb7, 0, 0, 0, SK_PASS),                   // r0 = SK_PASS
        insn(0x95, 0, 0, 0, 0),                         // exit
    ];
    let code = program.concat();
    let license = c"GPL";
    let mut log = vec![0u8; 4096];
    let mut attr = Attr::new();
    attr.u32(0, BPF_PROG_TYPE_SK_SKB);
    attr.u32(4, program.len() as u32);
    attr.u64(8, code.as_ptr() as u64);
    attr.u64(16, license.as_ptr() as u64);
    attr.u32(24, 1); // log level
    attr.u32(28, log.len() as u32);
    attr.u64(32, log.as_mut_ptr() as u64);
    attr.call_fd(BPF_PROG_LOAD).map_err(|e| {
        let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
        let said = String::from_utf8_lossy(&log[..end]);
        match said.trim() {
            "" => e,
            said => io::Error::new(e.kind(), format!("{e}; the verifier said: {said}")),
        }
    })
}

/// One BPF instruction: opcode, destination and source registers, offset, immediate.
const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> [u8; 8] {
    let off = off.to_le_bytes();
    let imm = imm.to_le_bytes();
    [
        code,
        dst | (src << 4),
        off[0],
        off[1],
        imm[0],
        imm[1],
        imm[2],
        imm[3],
    ]
}

fn fd_u32(fd: impl AsFd) -> u32 {
    u32::try_from(fd.as_fd().as_raw_fd()).unwrap_or(u32::MAX)
}

/// A zeroed `union bpf_attr`, filled field by field at the offsets of <linux/bpf.h>.
#[repr(C, align(8))]
struct Attr([u8; ATTR_SIZE]);

impl Attr {
    fn new() -> Attr {
        Attr([0; ATTR_SIZE])
    }

    fn u32(&mut self, at: usize, v: u32) {
        self.0[at..at + 4].copy_from_slice(&v.to_ne_bytes());
    }

    fn u64(&mut self, at: usize, v: u64) {
        self.0[at..at + 8].copy_from_slice(&v.to_ne_bytes());
    }

    #[allow(unsafe_code)]
    fn raw(&mut self, cmd: libc::c_long) -> io::Result<libc::c_long> {
        // SAFETY: `bpf(2)` reads (and for some commands writes) at most `ATTR_SIZE` bytes
        // of the attribute, which is live and writable for the call. The pointers stored
        // in it (keys, values, the program, the licence, the log) point to memory the
        // caller keeps alive across this call, sized as the attribute says.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                cmd,
                self.0.as_mut_ptr(),
                ATTR_SIZE as libc::c_uint,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(rc)
    }

    fn call(&mut self, cmd: libc::c_long) -> io::Result<()> {
        self.raw(cmd).map(drop)
    }

    #[allow(unsafe_code)]
    fn call_fd(&mut self, cmd: libc::c_long) -> io::Result<OwnedFd> {
        let fd = self.raw(cmd)?;
        let fd =
            i32::try_from(fd).map_err(|_| io::Error::other("bpf(2) returned no descriptor"))?;
        // SAFETY: the command returned a new descriptor that nothing else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }
}

#[allow(unsafe_code)]
fn getsockopt(
    socket: impl AsFd,
    level: libc::c_int,
    name: libc::c_int,
    buf: &mut [u8],
) -> io::Result<usize> {
    let mut len = libc::socklen_t::try_from(buf.len()).unwrap_or(libc::socklen_t::MAX);
    // SAFETY: the kernel writes at most `len` bytes to `buf`, which is live and that
    // long, and stores the length it wrote in `len`; the descriptor is borrowed.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_fd().as_raw_fd(),
            level,
            name,
            buf.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(len as usize)
}

#[allow(unsafe_code)]
fn setsockopt(
    socket: impl AsFd,
    level: libc::c_int,
    name: libc::c_int,
    value: &[u8],
) -> io::Result<()> {
    let len = libc::socklen_t::try_from(value.len()).unwrap_or(libc::socklen_t::MAX);
    // SAFETY: the kernel reads `len` bytes from `value`, which is live and that long.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_fd().as_raw_fd(),
            level,
            name,
            value.as_ptr().cast(),
            len,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
