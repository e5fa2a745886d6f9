//! A port-forward client for the tests, built on the crate's own codec: it opens kubectl's
//! pairs of streams, sends within the node's windows and, when it keeps windows, gives
//! them back as the test reads, checking that the node never sends past them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use proxy_portforward::spdy::{Decoder, Encoder, Frame, Headers, Setting, setting_id};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;

/// The SPDY/3.1 window both sides start with.
pub(crate) const WINDOW: i64 = 64 * 1024;

/// What a test waits for, at most.
pub(crate) const LIMIT: Duration = Duration::from_secs(20);

/// What a stream waits for, at most: past the node's 30 s stream creation timeout, which
/// tests on a paused clock wait for.
const STREAM_LIMIT: Duration = Duration::from_secs(60);

pub(crate) trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

/// What arrives on one stream.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Incoming {
    Data(Bytes),
    Fin,
    Reset(u32),
}

#[derive(Default)]
struct State {
    streams: HashMap<u32, mpsc::UnboundedSender<Incoming>>,
    /// What we may still send, per stream and for the session.
    send: HashMap<u32, i64>,
    session_send: i64,
    /// The send window each new stream starts with (the node's SETTINGS).
    initial_send: i64,
    /// What the node may still send us, per stream and for the session.
    recv: HashMap<u32, i64>,
    session_recv: i64,
    violations: Vec<String>,
}

struct Inner {
    writer: tokio::sync::Mutex<(Encoder, WriteHalf<Box<dyn Io>>)>,
    state: Mutex<State>,
    windows: Notify,
    keeps_windows: bool,
}

/// One session's client side.
#[derive(Clone)]
pub(crate) struct Client {
    inner: Arc<Inner>,
    control: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<Frame>>>,
    next: Arc<Mutex<(u32, u32)>>,
    reader: Arc<JoinHandle<()>>,
}

/// One forwarded connection: kubectl's error and data streams.
pub(crate) struct Pair {
    pub(crate) error_id: u32,
    pub(crate) data_id: u32,
    pub(crate) error: StreamRx,
    pub(crate) data: StreamRx,
}

/// What the node sends on one stream.
pub(crate) struct StreamRx {
    id: u32,
    rx: mpsc::UnboundedReceiver<Incoming>,
    client: Client,
}

impl Client {
    /// A client on `io`. One that `keeps_windows` says so with a SETTINGS frame first, and
    /// sends WINDOW_UPDATEs as the test reads; one that does not behaves as Go's
    /// spdystream (kubectl's): no SETTINGS, no WINDOW_UPDATE, windows ignored.
    pub(crate) async fn new(io: impl Io, keeps_windows: bool) -> Client {
        let (rd, wr) = tokio::io::split(Box::new(io) as Box<dyn Io>);
        let inner = Arc::new(Inner {
            writer: tokio::sync::Mutex::new((Encoder::new(), wr)),
            state: Mutex::new(State {
                session_send: WINDOW,
                session_recv: WINDOW,
                initial_send: WINDOW,
                ..State::default()
            }),
            windows: Notify::new(),
            keeps_windows,
        });
        let (control_tx, control) = mpsc::unbounded_channel();
        let reader = tokio::spawn(read_frames(rd, inner.clone(), control_tx));
        let client = Client {
            inner,
            control: Arc::new(tokio::sync::Mutex::new(control)),
            next: Arc::new(Mutex::new((1, 0))),
            reader: Arc::new(reader),
        };
        if keeps_windows {
            client
                .write(Frame::Settings {
                    clear: false,
                    entries: vec![Setting {
                        flags: 0,
                        id: setting_id::INITIAL_WINDOW_SIZE,
                        value: WINDOW as u32,
                    }],
                })
                .await;
        }
        client
    }

    pub(crate) async fn write(&self, frame: Frame) {
        let mut buf = BytesMut::new();
        let mut w = self.inner.writer.lock().await;
        w.0.encode(&frame, &mut buf).unwrap();
        // The node may be gone (tests of its end): what is lost then does not matter.
        let _ = w.1.write_all(&buf).await;
    }

    /// Opens kubectl's pair of streams for a connection to `port`, as kubectl does: the
    /// error stream first (closed at once from our side), then the data stream.
    pub(crate) async fn open(&self, port: u16) -> Pair {
        let (error_id, data_id, request) = {
            let mut next = self.next.lock().unwrap();
            let ids = (next.0, next.0 + 2, next.1);
            next.0 += 4;
            next.1 += 1;
            ids
        };
        let error = self.open_stream(error_id, "error", port, request).await;
        self.write(Frame::Data {
            stream_id: error_id,
            fin: true,
            data: Bytes::new(),
        })
        .await;
        let data = self.open_stream(data_id, "data", port, request).await;
        Pair {
            error_id,
            data_id,
            error,
            data,
        }
    }

    /// Opens one stream (no pairing done here).
    pub(crate) async fn open_stream(
        &self,
        id: u32,
        kind: &str,
        port: u16,
        request: u32,
    ) -> StreamRx {
        let (tx, rx) = mpsc::unbounded_channel();
        {
            let mut st = self.inner.state.lock().unwrap();
            st.streams.insert(id, tx);
            let initial = st.initial_send;
            st.send.insert(id, initial);
            st.recv.insert(id, WINDOW);
        }
        let headers = Headers::new()
            .with("streamtype", kind)
            .with("port", port.to_string())
            .with("requestid", request.to_string());
        self.write(Frame::syn_stream(id, headers)).await;
        StreamRx {
            id,
            rx,
            client: self.clone(),
        }
    }

    /// Sends `data` on `id` in frames of at most 32 KiB, within the node's windows when
    /// this client keeps them; then a FIN if `fin`.
    pub(crate) async fn send(&self, id: u32, mut data: &[u8], fin: bool) {
        let empty = data.is_empty();
        while !data.is_empty() {
            let n = if self.inner.keeps_windows {
                self.take_window(id, data.len().min(32 * 1024)).await
            } else {
                data.len().min(32 * 1024)
            };
            let (chunk, rest) = data.split_at(n);
            data = rest;
            self.write(Frame::Data {
                stream_id: id,
                fin: fin && data.is_empty(),
                data: Bytes::copy_from_slice(chunk),
            })
            .await;
        }
        if fin && empty {
            self.write(Frame::Data {
                stream_id: id,
                fin: true,
                data: Bytes::new(),
            })
            .await;
        }
    }

    async fn take_window(&self, id: u32, want: usize) -> usize {
        loop {
            let notified = self.inner.windows.notified();
            {
                let mut st = self.inner.state.lock().unwrap();
                let w = st.send[&id].min(st.session_send);
                if w > 0 {
                    let n = (w as usize).min(want);
                    *st.send.get_mut(&id).unwrap() -= n as i64;
                    st.session_send -= n as i64;
                    return n;
                }
            }
            tokio::time::timeout(LIMIT, notified)
                .await
                .expect("a WINDOW_UPDATE from the node in time");
        }
    }

    pub(crate) async fn reset(&self, id: u32) {
        self.write(Frame::RstStream {
            stream_id: id,
            status: 5,
        })
        .await;
    }

    /// The next control frame from the node (SYN_REPLY, PING, GOAWAY, RST_STREAM, ...),
    /// or `None` once it closed the connection.
    pub(crate) async fn control(&self) -> Option<Frame> {
        let mut rx = self.control.lock().await;
        tokio::time::timeout(LIMIT, rx.recv())
            .await
            .expect("a control frame in time")
    }

    /// The next control frame that is not a SYN_REPLY or a WINDOW_UPDATE.
    pub(crate) async fn next_notable(&self) -> Option<Frame> {
        loop {
            match self.control().await? {
                Frame::SynReply { .. } | Frame::WindowUpdate { .. } | Frame::Settings { .. } => {}
                f => return Some(f),
            }
        }
    }

    /// The times the node sent past our windows.
    pub(crate) fn violations(&self) -> Vec<String> {
        self.inner.state.lock().unwrap().violations.clone()
    }

    pub(crate) fn abort(&self) {
        self.reader.abort();
    }
}

impl StreamRx {
    /// The next thing that arrives (giving back its window if the client keeps them).
    pub(crate) async fn next(&mut self) -> Option<Incoming> {
        let item = tokio::time::timeout(STREAM_LIMIT, self.rx.recv())
            .await
            .unwrap_or_else(|_| panic!("stream {}: nothing in time", self.id));
        if let Some(Incoming::Data(d)) = &item
            && self.client.inner.keeps_windows
            && !d.is_empty()
        {
            let delta = d.len() as u32;
            {
                let mut st = self.client.inner.state.lock().unwrap();
                if let Some(w) = st.recv.get_mut(&self.id) {
                    *w += i64::from(delta);
                }
                st.session_recv += i64::from(delta);
            }
            for stream_id in [self.id, 0] {
                self.client
                    .write(Frame::WindowUpdate { stream_id, delta })
                    .await;
            }
        }
        item
    }

    /// Everything until the FIN (`Ok`) or a reset (`Err(status)`).
    pub(crate) async fn read_to_end(&mut self) -> (Vec<u8>, Result<(), u32>) {
        let mut all = Vec::new();
        loop {
            match self.next().await {
                Some(Incoming::Data(d)) => all.extend_from_slice(&d),
                Some(Incoming::Fin) => return (all, Ok(())),
                Some(Incoming::Reset(status)) => return (all, Err(status)),
                None => return (all, Err(u32::MAX)),
            }
        }
    }
}

async fn read_frames(
    mut rd: ReadHalf<Box<dyn Io>>,
    inner: Arc<Inner>,
    control: mpsc::UnboundedSender<Frame>,
) {
    let mut decoder = Decoder::new();
    let mut buf = BytesMut::with_capacity(64 * 1024);
    loop {
        while let Some(frame) = decoder
            .decode_buf(&mut buf)
            .expect("the node's frames decode")
        {
            handle(&inner, &control, frame).await;
        }
        match rd.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

async fn handle(inner: &Arc<Inner>, control: &mpsc::UnboundedSender<Frame>, frame: Frame) {
    match frame {
        Frame::Data {
            stream_id,
            fin,
            data,
        } => {
            let mut st = inner.state.lock().unwrap();
            if inner.keeps_windows {
                let len = data.len() as i64;
                st.session_recv -= len;
                let over_session = st.session_recv < 0;
                let w = st.recv.entry(stream_id).or_insert(WINDOW);
                *w -= len;
                if *w < 0 || over_session {
                    st.violations
                        .push(format!("stream {stream_id}: {len} bytes past the window"));
                }
            }
            if let Some(tx) = st.streams.get(&stream_id) {
                if !data.is_empty() {
                    let _ = tx.send(Incoming::Data(data));
                }
                if fin {
                    let _ = tx.send(Incoming::Fin);
                }
            }
        }
        Frame::RstStream { stream_id, status } => {
            if let Some(tx) = inner.state.lock().unwrap().streams.get(&stream_id) {
                let _ = tx.send(Incoming::Reset(status));
            }
            let _ = control.send(frame);
        }
        Frame::WindowUpdate { stream_id, delta } => {
            {
                let mut st = inner.state.lock().unwrap();
                if stream_id == 0 {
                    st.session_send += i64::from(delta);
                } else if let Some(w) = st.send.get_mut(&stream_id) {
                    *w += i64::from(delta);
                }
            }
            inner.windows.notify_waiters();
            let _ = control.send(frame);
        }
        Frame::Settings { ref entries, .. } => {
            // SETTINGS_INITIAL_WINDOW_SIZE moves every stream's send window by its change.
            {
                let mut st = inner.state.lock().unwrap();
                for e in entries {
                    if e.id == setting_id::INITIAL_WINDOW_SIZE {
                        let delta = i64::from(e.value) - st.initial_send;
                        st.initial_send = i64::from(e.value);
                        for w in st.send.values_mut() {
                            *w += delta;
                        }
                    }
                }
            }
            inner.windows.notify_waiters();
            let _ = control.send(frame);
        }
        Frame::Ping { id } if id % 2 == 0 => {
            // The node's PING: echo it, as every SPDY peer does.
            let mut buf = BytesMut::new();
            let mut w = inner.writer.lock().await;
            w.0.encode(&frame, &mut buf).unwrap();
            let _ = w.1.write_all(&buf).await;
            drop(w);
            let _ = control.send(Frame::Ping { id });
        }
        other => {
            let _ = control.send(other);
        }
    }
}
