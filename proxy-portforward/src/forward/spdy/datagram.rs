//! One forwarded UDP stream of a SPDY session ([`crate::udp`]): a connected UDP socket to
//! the pod's port, datagrams framed with a 2-byte length on the data stream both ways.
//!
//! Bounded: from the client, what is read from the stream is sent on before more is
//! taken (the stream's window closes meanwhile); from the pod, framed datagrams wait for
//! the session's task in one batch of at most [`BATCH`] bytes, and datagrams that do not
//! fit are dropped, as a full socket buffer would drop them.

use std::collections::VecDeque;
use std::io;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use super::stream::{Channels, Cmd, Ended, Inbound, Stop, Task, stopped};
use crate::forward::UdpForward;
use crate::udp::{self, Decoder};

/// The most framed bytes from the pod waiting for the session's task, beyond one
/// datagram.
const BATCH: usize = 128 << 10;

/// Why a UDP stream ended early.
enum Failure {
    /// Refused before dialing (UDP not negotiated, an unknown protocol), or the dial
    /// failed; the text goes to the client.
    Refused(String),
    /// The pod's socket failed (an ICMP error: nothing listens there).
    Pod(String),
    /// The client sent a frame that cannot be a datagram.
    Client(String),
    /// The session ended.
    SessionClosed,
}

/// Runs one UDP stream to its end (`udp`: how, or why it is refused), and tells the
/// session and the observer.
pub(super) async fn run(task: Task, udp: Result<UdpForward, String>) {
    let Task {
        forward,
        info,
        data_stream,
        mut inbound,
        mut stop,
        cmds,
        permits,
    } = task;
    let start = Instant::now();
    let (mut to_pod, mut from_pod) = (0, 0);
    let result = match udp {
        Err(reason) => Err(Failure::Refused(reason)),
        Ok(udp) => {
            let ch = Channels {
                data_stream,
                inbound: &mut inbound,
                stop: &mut stop,
                cmds: &cmds,
                permits: &permits,
            };
            relay(&forward, info.port, udp, ch, &mut to_pod, &mut from_pod).await
        }
    };
    let ended = match result {
        Ok(()) => Ended::ok(),
        Err(Failure::Refused(reason) | Failure::Pod(reason) | Failure::Client(reason)) => {
            Ended::told(reason, false)
        }
        Err(Failure::SessionClosed) => Ended::untold("session closed".into(), false),
    };
    ended.report(
        &forward,
        &info,
        &cmds,
        data_stream,
        (to_pod, from_pod),
        start,
    );
}

/// What a stop means for a UDP stream: the client's reset is its way to end one.
fn on_stop(stop: Stop) -> Result<(), Failure> {
    match stop {
        Stop::Reset => Ok(()),
        _ => Err(Failure::SessionClosed),
    }
}

/// An error of the pod's socket: ICMP errors (refused, unreachable) end the stream; any
/// other (a datagram too long, no buffer space) drops the datagram.
fn fatal(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::HostUnreachable
            | io::ErrorKind::NetworkUnreachable
    )
}

async fn relay(
    forward: &crate::forward::PodForward,
    port: u16,
    udp: UdpForward,
    ch: Channels<'_>,
    to_pod: &mut u64,
    from_pod: &mut u64,
) -> Result<(), Failure> {
    let mut early = VecDeque::new();
    let mut dial = forward.dialer.dial_udp(&forward.pod, port);
    let socket = loop {
        tokio::select! {
            r = &mut dial => break r.map_err(|e| Failure::Refused(e.to_string()))?,
            s = stopped(ch.stop) => return on_stop(s),
            Some(m) = ch.inbound.recv() => early.push_back(m),
        }
    };
    let peer = socket
        .peer_addr()
        .map_or_else(|_| format!("port {port}"), |a| a.to_string());
    let pod_error = |e: io::Error| Failure::Pod(format!("udp {peer}: {e}"));
    let mut up = Up {
        socket: &socket,
        decoder: Decoder::new(),
        cmds: ch.cmds,
        stream_id: ch.data_stream,
        to_pod,
        open: true,
    };
    for m in early {
        up.take(Some(m))
            .await
            .map_err(|e| e.into_failure(&pod_error))?;
    }
    let mut batch = BytesMut::new();
    let mut buf = vec![0; udp::MAX_DATAGRAM + 1];
    let mut dropped = 0u64;
    let idle = udp.idle_timeout;
    let mut deadline = tokio::time::Instant::now() + idle;
    let ended = loop {
        tokio::select! {
            m = ch.inbound.recv(), if up.open => {
                if m.is_none() {
                    break Err(Failure::SessionClosed);
                }
                if let Err(e) = up.take(m).await {
                    break Err(e.into_failure(&pod_error));
                }
                deadline = tokio::time::Instant::now() + idle;
            }
            r = socket.recv(&mut buf) => match r {
                Ok(n) => {
                    deadline = tokio::time::Instant::now() + idle;
                    if n > udp::MAX_DATAGRAM
                        || (!batch.is_empty() && batch.len() + udp::LENGTH_PREFIX + n > BATCH)
                    {
                        dropped += 1;
                        continue;
                    }
                    *from_pod += n as u64;
                    let _ = udp::encode(&buf[..n], &mut batch);
                }
                Err(e) if fatal(&e) => break Err(pod_error(e)),
                Err(e) => tracing::debug!(error = %e, "receiving from the pod's UDP port"),
            },
            p = ch.permits.acquire(), if !batch.is_empty() => {
                let Ok(p) = p else { break Err(Failure::SessionClosed) };
                p.forget();
                let data = batch.split().freeze();
                let sent = ch.cmds.send(Cmd::Data { stream_id: ch.data_stream, data, fin: false });
                if sent.is_err() {
                    break Err(Failure::SessionClosed);
                }
            }
            s = stopped(ch.stop) => break on_stop(s),
            () = tokio::time::sleep_until(deadline) => break Ok(()),
        }
    };
    if dropped > 0 {
        tracing::debug!(
            dropped,
            "datagrams from the pod dropped: the client is slower"
        );
    }
    ended
}

/// The client-to-pod half.
struct Up<'a> {
    socket: &'a UdpSocket,
    decoder: Decoder,
    cmds: &'a mpsc::UnboundedSender<Cmd>,
    stream_id: u32,
    to_pod: &'a mut u64,
    /// The client may send more (no FIN yet).
    open: bool,
}

enum UpError {
    Pod(io::Error),
    Frame(String),
    Closed,
}

impl UpError {
    fn into_failure(self, pod: &impl Fn(io::Error) -> Failure) -> Failure {
        match self {
            UpError::Pod(e) => pod(e),
            UpError::Frame(why) => Failure::Client(why),
            UpError::Closed => Failure::SessionClosed,
        }
    }
}

impl Up<'_> {
    /// Sends the whole datagrams of what came, and reports it consumed.
    async fn take(&mut self, m: Option<Inbound>) -> Result<(), UpError> {
        match m {
            Some(Inbound::Data(data)) => {
                self.decoder.extend(&data);
                while let Some(datagram) = self.decoder.next_datagram() {
                    self.send(datagram).await?;
                }
                let _ = self.cmds.send(Cmd::Consumed {
                    stream_id: self.stream_id,
                    n: data.len(),
                });
                Ok(())
            }
            Some(Inbound::Fin) => {
                self.open = false;
                if self.decoder.pending() > 0 {
                    return Err(UpError::Frame(format!(
                        "the stream ended inside a datagram ({} bytes of it)",
                        self.decoder.pending()
                    )));
                }
                Ok(())
            }
            None => Err(UpError::Closed),
        }
    }

    async fn send(&mut self, datagram: Bytes) -> Result<(), UpError> {
        match self.socket.send(&datagram).await {
            Ok(_) => {
                *self.to_pod += datagram.len() as u64;
                Ok(())
            }
            Err(e) if fatal(&e) => Err(UpError::Pod(e)),
            Err(e) => {
                tracing::debug!(error = %e, len = datagram.len(), "datagram to the pod dropped");
                Ok(())
            }
        }
    }
}
