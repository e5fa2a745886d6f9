//! The upstreams and the load of `scripts/soak.sh`, the soak of `proxy run`:
//!
//! - `soak_load serve --ip IP`: a TCP echo server and a UDP echo server on IP, on the same
//!   port (chosen by the kernel); prints `echo IP:PORT`, then serves until killed.
//! - `soak_load ports --ip IP N`: prints N ports that are free on IP for TCP and UDP.
//! - `soak_load load --tcp ADDR,... --udp ADDR,... --secs S`: for S seconds, TCP clients
//!   that connect, send payloads of random length (1 B to 256 KiB, so the proxy both copies
//!   and splices) and check every echoed byte, then close (mostly with a FIN, some with a
//!   reset); and UDP clients that send sequence-numbered datagrams (0 B to 60,000 B) on a
//!   new source port (a new proxy session) every few hundred datagrams and check every
//!   reply byte for byte. Prints a progress line every `--report-secs` to stderr and a
//!   `key=value` summary at the end to stdout (and `--summary FILE`).
//!
//! What counts as what:
//!
//! - **byte errors** (must be 0): a TCP echo that differs from what was sent, or that ends
//!   early with a clean EOF (cut short without a reset), or data after the last echo; a UDP
//!   reply whose bytes differ from the datagram sent, or that was never sent at all.
//! - **resets**, **timeouts**, **connect failures**: a connection that was reset, stalled
//!   for 10 s, or could not be opened. Not byte errors, but none should happen either.
//! - **UDP lost**: datagrams with no reply within 2 s (and none later); loss is allowed on
//!   UDP and counted apart from corruption. A reply after 2 s counts as late, not lost.
//!
//! Everything is deterministic from `--seed`: each payload is generated from a seed, so the
//! expected bytes are regenerated, not stored.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream, UdpSocket};
use tokio::time::{MissedTickBehavior, sleep, timeout};

use proxy_testkit::echo::echo_stream;
use proxy_testkit::udp::echo_datagrams;

/// How long any one TCP operation (connect, an exchange, the close) may take.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// A datagram without a reply this long after it was sent is counted as lost.
const UDP_LOST_AFTER: Duration = Duration::from_secs(2);

/// Datagrams in flight per UDP client.
const UDP_WINDOW: usize = 16;

/// The first bytes of every soak datagram.
const MAGIC: u32 = 0x534f_414b; // "SOAK"

/// magic (4), client (4), session (8), sequence number (8), payload length (4).
const HEADER: usize = 28;

#[derive(Parser)]
#[command(about = "Echo servers and load generator for scripts/soak.sh")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// TCP and UDP echo servers on one port of IP; prints `echo IP:PORT`.
    Serve {
        #[arg(long, default_value = "127.0.0.1")]
        ip: IpAddr,
    },
    /// Prints N ports free on IP for both TCP and UDP, one a line.
    Ports {
        #[arg(long, default_value = "127.0.0.1")]
        ip: IpAddr,
        n: usize,
    },
    /// Runs the load against the proxy's listen addresses.
    Load(LoadArgs),
}

#[derive(clap::Args)]
struct LoadArgs {
    /// TCP addresses to connect to (comma-separated), each an echo through the proxy.
    #[arg(long, value_delimiter = ',', required = true)]
    tcp: Vec<SocketAddr>,
    /// UDP addresses to send to (comma-separated), each an echo through the proxy.
    #[arg(long, value_delimiter = ',', required = true)]
    udp: Vec<SocketAddr>,
    /// How long to run, in seconds.
    #[arg(long)]
    secs: u64,
    /// Concurrent TCP clients, each one connection at a time.
    #[arg(long, default_value_t = 24)]
    tcp_clients: u64,
    /// Longest pause between two exchanges of a TCP client, in milliseconds.
    #[arg(long, default_value_t = 20)]
    think_ms: u64,
    /// Concurrent UDP clients.
    #[arg(long, default_value_t = 8)]
    udp_clients: u64,
    /// Datagrams per second each UDP client sends at most.
    #[arg(long, default_value_t = 250)]
    udp_rate: u64,
    /// Seconds between progress lines on stderr.
    #[arg(long, default_value_t = 10)]
    report_secs: u64,
    /// Also write the summary to this file.
    #[arg(long)]
    summary: Option<PathBuf>,
    /// Seed of every random choice and payload.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Cmd::Serve { ip } => rt.block_on(serve(ip)),
        Cmd::Ports { ip, n } => ports(ip, n),
        Cmd::Load(args) => {
            let errors = rt.block_on(load(args))?;
            if errors > 0 {
                std::process::exit(1);
            }
            Ok(())
        }
    }
}

// ===== random numbers and payloads =====

/// SplitMix64: small, fast, and good enough for lengths, pauses and payload bytes.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `low..=high`.
    fn range(&mut self, low: u64, high: u64) -> u64 {
        low + self.next() % (high - low + 1)
    }

    /// True with probability `percent` / 100.
    fn percent(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

/// Appends `len` bytes generated from `seed` to `out`.
fn fill(out: &mut Vec<u8>, seed: u64, len: usize) {
    let mut rng = Rng::new(seed);
    let start = out.len();
    out.reserve(len);
    while out.len() - start < len {
        let word = rng.next().to_le_bytes();
        let take = (len - (out.len() - start)).min(8);
        out.extend_from_slice(&word[..take]);
    }
}

/// The seed of one payload, from what identifies it.
fn payload_seed(run: u64, client: u64, a: u64, b: u64) -> u64 {
    let mut rng = Rng::new(run ^ client.rotate_left(48) ^ a.rotate_left(24) ^ b);
    rng.next()
}

/// A TCP payload length: mostly small messages, some medium ones, and 10 % bulk bursts
/// over the proxy's 16 KiB copy threshold, which it splices.
fn tcp_len(rng: &mut Rng) -> usize {
    let n = match rng.next() % 100 {
        0..60 => rng.range(1, 1024),
        60..90 => rng.range(1025, 16 * 1024),
        _ => rng.range(16 * 1024 + 1, 256 * 1024),
    };
    n as usize
}

/// A UDP payload length: mostly DNS-sized, some up to an Ethernet frame, a few large
/// ones (loopback carries them whole).
fn udp_len(rng: &mut Rng) -> usize {
    let n = match rng.next() % 100 {
        0..85 => rng.range(0, 512),
        85..97 => rng.range(513, 1472),
        _ => rng.range(1473, 60_000),
    };
    n as usize
}

// ===== serve =====

async fn serve(ip: IpAddr) -> anyhow::Result<()> {
    // TCP first on a port of the kernel's choice, then UDP on the same port.
    let (listener, udp) = {
        let mut tries = 0;
        loop {
            tries += 1;
            let socket = tcp_socket(ip)?;
            socket.set_reuseaddr(true)?;
            socket.bind(SocketAddr::new(ip, 0))?;
            let listener = socket.listen(1024)?;
            let port = listener.local_addr()?.port();
            match UdpSocket::bind(SocketAddr::new(ip, port)).await {
                Ok(udp) => break (listener, udp),
                Err(e) if tries < 10 => eprintln!("UDP port {port} taken ({e}); again"),
                Err(e) => return Err(e.into()),
            }
        }
    };
    println!("echo {}", listener.local_addr()?);
    tokio::spawn(echo_datagrams(udp));
    loop {
        match listener.accept().await {
            Ok((conn, _)) => {
                tokio::spawn(echo_stream(conn));
            }
            Err(e) => {
                eprintln!("accept: {e}");
                sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

fn tcp_socket(ip: IpAddr) -> io::Result<TcpSocket> {
    if ip.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
}

// ===== ports =====

fn ports(ip: IpAddr, n: usize) -> anyhow::Result<()> {
    let mut held = Vec::new();
    while held.len() < n {
        let tcp = std::net::TcpListener::bind(SocketAddr::new(ip, 0))?;
        let port = tcp.local_addr()?.port();
        if let Ok(udp) = std::net::UdpSocket::bind(SocketAddr::new(ip, port)) {
            println!("{port}");
            held.push((tcp, udp));
        }
    }
    Ok(())
}

// ===== load =====

/// Every count of the load, shared by all clients.
#[derive(Default)]
struct Counters {
    tcp_connections: AtomicU64,
    tcp_connect_failures: AtomicU64,
    tcp_exchanges: AtomicU64,
    tcp_bytes: AtomicU64,
    tcp_mismatches: AtomicU64,
    tcp_cut_short: AtomicU64,
    tcp_resets: AtomicU64,
    tcp_timeouts: AtomicU64,
    tcp_other_errors: AtomicU64,
    tcp_clean_closes: AtomicU64,
    tcp_aborts: AtomicU64,
    udp_sessions: AtomicU64,
    udp_sent: AtomicU64,
    udp_received: AtomicU64,
    udp_bytes: AtomicU64,
    udp_lost: AtomicU64,
    udp_late: AtomicU64,
    udp_duplicates: AtomicU64,
    udp_corrupt: AtomicU64,
    udp_socket_errors: AtomicU64,
}

fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

fn get(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

impl Counters {
    fn byte_errors(&self) -> u64 {
        get(&self.tcp_mismatches) + get(&self.tcp_cut_short) + get(&self.udp_corrupt)
    }

    fn connection_errors(&self) -> u64 {
        get(&self.tcp_connect_failures)
            + get(&self.tcp_resets)
            + get(&self.tcp_timeouts)
            + get(&self.tcp_other_errors)
    }

    fn progress(&self, elapsed: Duration) -> String {
        format!(
            "[{:>4}s] tcp: {} connections, {} exchanges, {} MiB echoed | udp: {} sent, {} \
             received, {} lost | byte errors {} | connection errors {}",
            elapsed.as_secs(),
            get(&self.tcp_connections),
            get(&self.tcp_exchanges),
            get(&self.tcp_bytes) >> 20,
            get(&self.udp_sent),
            get(&self.udp_received),
            get(&self.udp_lost),
            self.byte_errors(),
            self.connection_errors(),
        )
    }

    fn summary(&self, secs: f64) -> String {
        let mut lines = vec![format!("duration_secs={secs:.1}")];
        for (key, counter) in [
            ("tcp_connections", &self.tcp_connections),
            ("tcp_connect_failures", &self.tcp_connect_failures),
            ("tcp_exchanges", &self.tcp_exchanges),
            ("tcp_bytes_echoed", &self.tcp_bytes),
            ("tcp_mismatches", &self.tcp_mismatches),
            ("tcp_cut_short", &self.tcp_cut_short),
            ("tcp_resets", &self.tcp_resets),
            ("tcp_timeouts", &self.tcp_timeouts),
            ("tcp_other_errors", &self.tcp_other_errors),
            ("tcp_clean_closes", &self.tcp_clean_closes),
            ("tcp_client_aborts", &self.tcp_aborts),
            ("udp_sessions", &self.udp_sessions),
            ("udp_sent", &self.udp_sent),
            ("udp_received", &self.udp_received),
            ("udp_bytes_echoed", &self.udp_bytes),
            ("udp_lost", &self.udp_lost),
            ("udp_late", &self.udp_late),
            ("udp_duplicates", &self.udp_duplicates),
            ("udp_corrupt", &self.udp_corrupt),
            ("udp_socket_errors", &self.udp_socket_errors),
        ] {
            lines.push(format!("{key}={}", get(counter)));
        }
        lines.push(format!("byte_errors={}", self.byte_errors()));
        lines.push(format!("connection_errors={}", self.connection_errors()));
        lines.join("\n") + "\n"
    }
}

/// Runs the load; returns the byte errors.
async fn load(args: LoadArgs) -> anyhow::Result<u64> {
    let counters = Arc::new(Counters::default());
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.secs);
    let mut clients = tokio::task::JoinSet::new();
    for id in 0..args.tcp_clients {
        let client = TcpClient {
            id,
            run: args.seed,
            addrs: args.tcp.clone(),
            think_ms: args.think_ms,
            deadline,
            counters: counters.clone(),
        };
        clients.spawn(client.run());
    }
    for id in 0..args.udp_clients {
        let client = UdpClient {
            id: id as u32,
            run: args.seed,
            addrs: args.udp.clone(),
            interval: Duration::from_micros(1_000_000 / args.udp_rate.max(1)),
            deadline,
            counters: counters.clone(),
        };
        clients.spawn(client.run());
    }
    let report = Duration::from_secs(args.report_secs.max(1));
    let mut next_report = started + report;
    loop {
        tokio::select! {
            done = clients.join_next() => match done {
                Some(result) => result?,
                None => break,
            },
            () = tokio::time::sleep_until(next_report.into()) => {
                eprintln!("{}", counters.progress(started.elapsed()));
                next_report += report;
            }
        }
    }
    eprintln!("{}", counters.progress(started.elapsed()));
    let summary = counters.summary(started.elapsed().as_secs_f64());
    print!("{summary}");
    if let Some(path) = &args.summary {
        std::fs::write(path, &summary)?;
    }
    Ok(counters.byte_errors())
}

/// How an exchange or a close failed, counted in [`Counters`].
fn count_error(c: &Counters, what: &str, e: &io::Error) {
    let counter = match e.kind() {
        io::ErrorKind::UnexpectedEof => &c.tcp_cut_short,
        io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::BrokenPipe => &c.tcp_resets,
        _ => &c.tcp_other_errors,
    };
    if get(counter) < 5 {
        eprintln!("tcp {what}: {e} ({:?})", e.kind());
    }
    add(counter, 1);
}

struct TcpClient {
    id: u64,
    run: u64,
    addrs: Vec<SocketAddr>,
    think_ms: u64,
    deadline: Instant,
    counters: Arc<Counters>,
}

impl TcpClient {
    async fn run(self) {
        let c = &*self.counters;
        let mut rng = Rng::new(payload_seed(self.run, self.id, 0, u64::MAX));
        let mut conn_no = 0u64;
        while Instant::now() < self.deadline {
            let addr = self.addrs[((self.id + conn_no) % self.addrs.len() as u64) as usize];
            conn_no += 1;
            let stream = match timeout(IO_TIMEOUT, TcpStream::connect(addr)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    if get(&c.tcp_connect_failures) < 5 {
                        eprintln!("tcp connect to {addr}: {e}");
                    }
                    add(&c.tcp_connect_failures, 1);
                    sleep(Duration::from_millis(100)).await;
                    continue;
                }
                Err(_) => {
                    eprintln!("tcp connect to {addr}: no answer in {IO_TIMEOUT:?}");
                    add(&c.tcp_connect_failures, 1);
                    continue;
                }
            };
            add(&c.tcp_connections, 1);
            let _ = stream.set_nodelay(true);
            self.connection(stream, &mut rng, conn_no).await;
        }
    }

    /// One connection: 1 to 100 exchanges, then a FIN (90 %) or a reset (10 %).
    async fn connection(&self, mut stream: TcpStream, rng: &mut Rng, conn_no: u64) {
        let c = &*self.counters;
        let exchanges = rng.range(1, 100);
        let mut sent = Vec::new();
        let mut back = Vec::new();
        for exchange in 0..exchanges {
            if Instant::now() >= self.deadline {
                break;
            }
            let len = tcp_len(rng);
            sent.clear();
            fill(
                &mut sent,
                payload_seed(self.run, self.id, conn_no, exchange),
                len,
            );
            back.clear();
            back.resize(len, 0);
            let (mut reader, mut writer) = stream.split();
            let both =
                async { tokio::try_join!(writer.write_all(&sent), reader.read_exact(&mut back)) };
            match timeout(IO_TIMEOUT, both).await {
                Err(_) => {
                    eprintln!("tcp exchange of {len} bytes: no echo in {IO_TIMEOUT:?}");
                    add(&c.tcp_timeouts, 1);
                    return;
                }
                Ok(Err(e)) => {
                    count_error(c, &format!("exchange of {len} bytes"), &e);
                    return;
                }
                Ok(Ok(_)) => {}
            }
            if back != sent {
                let at = back.iter().zip(&sent).position(|(a, b)| a != b);
                if get(&c.tcp_mismatches) < 5 {
                    eprintln!(
                        "tcp exchange of {len} bytes: echo differs, first at byte {at:?} \
                         (client {}, connection {conn_no}, exchange {exchange})",
                        self.id
                    );
                }
                add(&c.tcp_mismatches, 1);
                return;
            }
            add(&c.tcp_exchanges, 1);
            add(&c.tcp_bytes, len as u64);
            let think = rng.range(0, self.think_ms);
            if think > 0 {
                sleep(Duration::from_millis(think)).await;
            }
        }
        if rng.percent(10) {
            // A reset, which the proxy passes on to the upstream.
            let _ = stream.set_zero_linger();
            add(&c.tcp_aborts, 1);
            return;
        }
        // A FIN; the echo server's FIN must come back, and nothing before it.
        let close = async {
            stream.shutdown().await?;
            let mut extra = [0u8; 1024];
            stream.read(&mut extra).await
        };
        match timeout(IO_TIMEOUT, close).await {
            Ok(Ok(0)) => add(&c.tcp_clean_closes, 1),
            Ok(Ok(n)) => {
                eprintln!("tcp close: {n} bytes after the last echo");
                add(&c.tcp_mismatches, 1);
            }
            Ok(Err(e)) => count_error(c, "close", &e),
            Err(_) => {
                eprintln!("tcp close: no FIN back in {IO_TIMEOUT:?}");
                add(&c.tcp_timeouts, 1);
            }
        }
    }
}

struct UdpClient {
    id: u32,
    run: u64,
    addrs: Vec<SocketAddr>,
    interval: Duration,
    deadline: Instant,
    counters: Arc<Counters>,
}

/// The datagram `seq` of `session` of client `client`, with a payload of `len` bytes.
fn datagram(out: &mut Vec<u8>, run: u64, client: u32, session: u64, seq: u64, len: usize) {
    out.clear();
    out.extend_from_slice(&MAGIC.to_be_bytes());
    out.extend_from_slice(&client.to_be_bytes());
    out.extend_from_slice(&session.to_be_bytes());
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(&(len as u32).to_be_bytes());
    fill(out, payload_seed(run, client.into(), session, seq), len);
}

impl UdpClient {
    async fn run(self) {
        let c = &*self.counters;
        let mut rng = Rng::new(payload_seed(self.run, self.id.into(), u64::MAX, 0));
        let mut session = 0u64;
        while Instant::now() < self.deadline {
            session += 1;
            let addr = self.addrs[(session as usize + self.id as usize) % self.addrs.len()];
            let socket = match UdpSocket::bind(SocketAddr::new(addr.ip(), 0)).await {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("udp bind: {e}");
                    add(&c.udp_socket_errors, 1);
                    sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            if let Err(e) = socket.connect(addr).await {
                eprintln!("udp connect to {addr}: {e}");
                add(&c.udp_socket_errors, 1);
                continue;
            }
            add(&c.udp_sessions, 1);
            let datagrams = rng.range(100, 1000);
            self.session(&socket, &mut rng, session, datagrams).await;
        }
    }

    /// Sends `datagrams` datagrams from `socket` (one proxy session), at most
    /// [`UDP_WINDOW`] in flight, checking each reply; returns once every datagram has its
    /// reply or was counted lost.
    async fn session(&self, socket: &UdpSocket, rng: &mut Rng, session: u64, datagrams: u64) {
        let c = &*self.counters;
        // In flight: sequence number -> (payload length, when sent).
        let mut in_flight: HashMap<u64, (usize, Instant)> = HashMap::new();
        let mut lost: HashMap<u64, usize> = HashMap::new();
        let mut answered: HashMap<u64, usize> = HashMap::new();
        let mut out = Vec::new();
        let mut expected = Vec::new();
        let mut buf = vec![0u8; 65_536];
        let mut seq = 0u64;
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            let sending = seq < datagrams && Instant::now() < self.deadline;
            if !sending && in_flight.is_empty() {
                return;
            }
            tokio::select! {
                _ = tick.tick(), if sending && in_flight.len() < UDP_WINDOW => {
                    let len = udp_len(rng);
                    datagram(&mut out, self.run, self.id, session, seq, len);
                    match socket.send(&out).await {
                        Ok(_) => {
                            in_flight.insert(seq, (len, Instant::now()));
                            add(&c.udp_sent, 1);
                        }
                        Err(e) => {
                            if get(&c.udp_socket_errors) < 5 {
                                eprintln!("udp send: {e}");
                            }
                            add(&c.udp_socket_errors, 1);
                        }
                    }
                    seq += 1;
                }
                received = socket.recv(&mut buf) => match received {
                    Ok(n) => {
                        let reply = &buf[..n];
                        self.check(reply, session, &mut in_flight, &mut lost, &mut answered,
                            &mut expected);
                    }
                    Err(e) => {
                        // ECONNREFUSED: an ICMP error for an earlier datagram.
                        if get(&c.udp_socket_errors) < 5 {
                            eprintln!("udp recv: {e}");
                        }
                        add(&c.udp_socket_errors, 1);
                    }
                },
                () = sleep(Duration::from_millis(100)) => {}
            }
            let now = Instant::now();
            in_flight.retain(|&seq, &mut (len, sent)| {
                let waiting = now.duration_since(sent) < UDP_LOST_AFTER;
                if !waiting {
                    lost.insert(seq, len);
                    add(&c.udp_lost, 1);
                }
                waiting
            });
        }
    }

    /// Checks one reply against the datagram it must be a copy of.
    fn check(
        &self,
        reply: &[u8],
        session: u64,
        in_flight: &mut HashMap<u64, (usize, Instant)>,
        lost: &mut HashMap<u64, usize>,
        answered: &mut HashMap<u64, usize>,
        expected: &mut Vec<u8>,
    ) {
        let c = &*self.counters;
        let seq =
            (reply.len() >= HEADER).then(|| u64::from_be_bytes(reply[16..24].try_into().unwrap()));
        let len = seq.and_then(|seq| {
            if let Some((len, _)) = in_flight.remove(&seq) {
                add(&c.udp_received, 1);
                answered.insert(seq, len);
                Some(len)
            } else if let Some(len) = lost.remove(&seq) {
                // Counted lost, then arrived after all.
                c.udp_lost.fetch_sub(1, Ordering::Relaxed);
                add(&c.udp_late, 1);
                add(&c.udp_received, 1);
                answered.insert(seq, len);
                Some(len)
            } else if let Some(&len) = answered.get(&seq) {
                add(&c.udp_duplicates, 1);
                Some(len)
            } else {
                None
            }
        });
        let good = len.is_some_and(|len| {
            datagram(expected, self.run, self.id, session, seq.unwrap(), len);
            reply == expected.as_slice()
        });
        if good {
            add(&c.udp_bytes, reply.len() as u64);
        } else {
            if get(&c.udp_corrupt) < 5 {
                eprintln!(
                    "udp reply of {} bytes differs from every datagram sent (client {}, \
                     session {session}, seq {seq:?})",
                    reply.len(),
                    self.id
                );
            }
            add(&c.udp_corrupt, 1);
        }
    }
}
