//! One forwarded connection of a SPDY session: dial the pod's port, then copy both ways,
//! talking to the session's task through channels (the task owns the codec and the
//! connection, so frames go out in order).

use std::collections::VecDeque;
use std::pin::pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::sync::{Semaphore, mpsc, watch};

use crate::channel::kubelet_error_message;
use crate::forward::{PodForward, StreamEnd, StreamInfo};

/// The most read from the pod at once: one data frame's worth, as kubectl writes them.
pub(super) const POD_READ: usize = 32 * 1024;

/// From the session's task to a stream's: what the client sent on the data stream.
#[derive(Debug)]
pub(super) enum Inbound {
    /// Bytes for the pod (the task reports them [`Cmd::Consumed`] once written).
    Data(Bytes),
    /// The client sends nothing more: half-close the pod's socket.
    Fin,
}

/// From the session's task to a stream's, whatever the stream is waiting for: stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Stop {
    /// Not yet.
    No,
    /// The client reset the data stream.
    Reset,
    /// The session is ending.
    Closed,
}

/// From a stream's task to the session's.
#[derive(Debug)]
pub(super) enum Cmd {
    /// `n` bytes the client sent on `stream_id` were written to the pod.
    Consumed {
        /// The data stream.
        stream_id: u32,
        /// How many.
        n: usize,
    },
    /// Bytes from the pod for the data stream (each took a permit; an empty one with
    /// `fin` is the pod's FIN).
    Data {
        /// The data stream.
        stream_id: u32,
        /// The bytes.
        data: Bytes,
        /// The pod will send nothing more.
        fin: bool,
    },
    /// The stream is over: write `message` (if any) on the error stream and close it,
    /// close the data stream if still open (reset it if `reset`), forget the pair.
    Finish {
        /// The data stream.
        stream_id: u32,
        /// The kubelet's error text for the client.
        message: Option<String>,
        /// Reset the data stream instead of closing it.
        reset: bool,
    },
}

/// A forwarded connection's task, as the session's task starts it.
pub(super) struct Task {
    pub(super) forward: PodForward,
    pub(super) info: StreamInfo,
    pub(super) data_stream: u32,
    pub(super) inbound: mpsc::UnboundedReceiver<Inbound>,
    pub(super) stop: watch::Receiver<Stop>,
    pub(super) cmds: mpsc::UnboundedSender<Cmd>,
    /// Chunks from the pod the session's task may hold for this stream.
    pub(super) permits: Arc<Semaphore>,
}

/// Why a stream ended early.
enum Failure {
    /// Dialing the pod's port failed.
    Dial(String),
    /// The pod's socket failed mid-stream.
    Pod(String),
    /// The pod reset its connection (or closed it with bytes unread): passed on as a
    /// reset of the data stream, with no error text (see [`pod_failure`]).
    PodClosed(String),
    /// The client reset the data stream before the pod finished sending.
    ClientReset,
    /// The session ended.
    SessionClosed,
}

/// Runs one forwarded connection to its end, and tells the session and the observer.
pub(super) async fn run(task: Task) {
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
    let result = relay(
        &forward,
        &info,
        Channels {
            data_stream,
            inbound: &mut inbound,
            stop: &mut stop,
            cmds: &cmds,
            permits: &permits,
        },
        &mut to_pod,
        &mut from_pod,
    )
    .await;
    let ended = match result {
        Ok(()) => Ended::ok(),
        Err(Failure::Dial(reason)) => Ended::told(reason, false),
        Err(Failure::Pod(reason)) => Ended::told(reason, true),
        Err(Failure::PodClosed(reason)) => Ended::untold(format!("pod closed: {reason}"), true),
        Err(Failure::ClientReset) => Ended::untold("reset by the client".into(), false),
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

/// How a forwarded connection ended, for the session and the observer.
pub(super) struct Ended {
    /// For the observer (and the access log).
    error: Option<String>,
    /// Written on the error stream, in the kubelet's words.
    tell_client: bool,
    /// Reset the data stream instead of closing it.
    reset: bool,
}

impl Ended {
    pub(super) fn ok() -> Self {
        Ended {
            error: None,
            tell_client: false,
            reset: false,
        }
    }

    /// Ended by `reason`, which the client is told on the error stream.
    pub(super) fn told(reason: String, reset: bool) -> Self {
        Ended {
            error: Some(reason),
            tell_client: true,
            reset,
        }
    }

    /// Ended by `reason`, which only the observer hears of.
    pub(super) fn untold(reason: String, reset: bool) -> Self {
        Ended {
            error: Some(reason),
            tell_client: false,
            reset,
        }
    }

    /// Tells the session (`Finish`: the error text, the streams closed or reset) and the
    /// observer (bytes each way, duration, error).
    pub(super) fn report(
        self,
        forward: &PodForward,
        info: &StreamInfo,
        cmds: &mpsc::UnboundedSender<Cmd>,
        data_stream: u32,
        (to_pod, from_pod): (u64, u64),
        start: Instant,
    ) {
        let message = (self.error.as_deref())
            .filter(|_| self.tell_client)
            .map(|reason| {
                kubelet_error_message(info.port, &forward.pod.name, &forward.pod.uid(), reason)
            });
        // The session's task may be gone already: nothing left to tell it then.
        let _ = cmds.send(Cmd::Finish {
            stream_id: data_stream,
            message,
            reset: self.reset,
        });
        forward.observer.stream_ended(
            info,
            &StreamEnd {
                bytes_to_pod: to_pod,
                bytes_from_pod: from_pod,
                duration: start.elapsed(),
                error: self.error,
            },
        );
    }
}

/// What a forwarded connection's relay borrows of its [`Task`].
pub(super) struct Channels<'a> {
    pub(super) data_stream: u32,
    pub(super) inbound: &'a mut mpsc::UnboundedReceiver<Inbound>,
    pub(super) stop: &'a mut watch::Receiver<Stop>,
    pub(super) cmds: &'a mpsc::UnboundedSender<Cmd>,
    pub(super) permits: &'a Semaphore,
}

/// What the stop signal says (a session's task gone is the session closed).
pub(super) async fn stopped(stop: &mut watch::Receiver<Stop>) -> Stop {
    match stop.wait_for(|s| *s != Stop::No).await {
        Ok(s) => *s,
        Err(_) => Stop::Closed,
    }
}

async fn relay(
    forward: &PodForward,
    info: &StreamInfo,
    ch: Channels<'_>,
    to_pod: &mut u64,
    from_pod: &mut u64,
) -> Result<(), Failure> {
    // What the client sends while the pod is being dialed waits here (bounded by the
    // stream's window, or by the session's pause in reading).
    let mut early = VecDeque::new();
    let mut dial = forward.dialer.dial(&forward.pod, info.port);
    let mut socket = loop {
        tokio::select! {
            r = &mut dial => break r.map_err(|e| Failure::Dial(e.to_string()))?,
            s = stopped(ch.stop) => return Err(match s {
                Stop::Reset => Failure::ClientReset,
                _ => Failure::SessionClosed,
            }),
            Some(m) = ch.inbound.recv() => early.push_back(m),
        }
    };
    let _ = socket.set_nodelay(true);
    let outcome = {
        let (rd, wr) = socket.split();
        let up = pin!(up(wr, early, ch.inbound, ch.cmds, ch.data_stream, to_pod));
        let down = pin!(down(rd, ch.cmds, ch.permits, ch.data_stream, from_pod));
        both(up, down, ch.stop).await
    };
    if matches!(outcome, Err(Failure::ClientReset)) {
        // An RST as an RST: the pod sees its connection aborted.
        let _ = socket2::SockRef::from(&socket).set_linger(Some(Duration::ZERO));
    }
    outcome
}

/// Drives both directions until both are done, one fails, or the stream is stopped.
async fn both(
    mut up: std::pin::Pin<&mut impl Future<Output = Result<(), Failure>>>,
    mut down: std::pin::Pin<&mut impl Future<Output = Result<(), Failure>>>,
    stop: &mut watch::Receiver<Stop>,
) -> Result<(), Failure> {
    let (mut up_done, mut down_done) = (false, false);
    while !(up_done && down_done) {
        tokio::select! {
            r = &mut up, if !up_done => {
                r?;
                up_done = true;
            }
            r = &mut down, if !down_done => {
                r?;
                down_done = true;
            }
            s = stopped(stop) => return match s {
                // kubectl resets the data stream once the pod's side is done: normal.
                Stop::Reset if down_done => Ok(()),
                Stop::Reset => Err(Failure::ClientReset),
                _ => Err(Failure::SessionClosed),
            },
        }
    }
    Ok(())
}

/// Client to pod: writes what comes, reports it consumed, half-closes at the client's FIN.
async fn up(
    mut wr: WriteHalf<'_>,
    mut early: VecDeque<Inbound>,
    inbound: &mut mpsc::UnboundedReceiver<Inbound>,
    cmds: &mpsc::UnboundedSender<Cmd>,
    stream_id: u32,
    to_pod: &mut u64,
) -> Result<(), Failure> {
    loop {
        let m = match early.pop_front() {
            Some(m) => Some(m),
            None => inbound.recv().await,
        };
        match m {
            Some(Inbound::Data(data)) => {
                wr.write_all(&data).await.map_err(pod_failure)?;
                *to_pod += data.len() as u64;
                let _ = cmds.send(Cmd::Consumed {
                    stream_id,
                    n: data.len(),
                });
            }
            Some(Inbound::Fin) => {
                wr.shutdown().await.map_err(pod_failure)?;
                return Ok(());
            }
            None => return Err(Failure::SessionClosed),
        }
    }
}

/// Pod to client: one chunk per permit, an empty one with FIN at the pod's FIN.
async fn down(
    mut rd: ReadHalf<'_>,
    cmds: &mpsc::UnboundedSender<Cmd>,
    permits: &Semaphore,
    stream_id: u32,
    from_pod: &mut u64,
) -> Result<(), Failure> {
    loop {
        permits
            .acquire()
            .await
            .map_err(|_| Failure::SessionClosed)?
            .forget();
        let mut buf = BytesMut::with_capacity(POD_READ);
        let n = rd.read_buf(&mut buf).await.map_err(pod_failure)?;
        let fin = n == 0;
        *from_pod += n as u64;
        let sent = cmds.send(Cmd::Data {
            stream_id,
            data: buf.freeze(),
            fin,
        });
        if sent.is_err() {
            return Err(Failure::SessionClosed);
        }
        if fin {
            return Ok(());
        }
    }
}

/// What a failed read or write on the pod's socket means. A reset (or a write after the
/// pod closed, EPIPE) is TCP's way to end a connection, and goes to the client as a reset
/// of that connection's data stream only: error text would make kubectl end every forward
/// of the session (`error: lost connection to pod`, kubectl#1169), where the kubelet writes
/// it. Any other failure gets the kubelet's error text.
fn pod_failure(e: std::io::Error) -> Failure {
    use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset};
    match e.kind() {
        ConnectionReset | BrokenPipe | ConnectionAborted => Failure::PodClosed(e.to_string()),
        _ => Failure::Pod(e.to_string()),
    }
}
