use bytes::Bytes;

use super::session::FlowControl;
use super::session::{DEFAULT_WINDOW, Event, SendError, SessionError, StreamKind};
use super::*;

fn open(stream_id: u32, kind: &str, port: &str, request: Option<&str>) -> Frame {
    let mut headers = Headers::new().with("streamtype", kind).with("port", port);
    if let Some(r) = request {
        headers.push("requestid", r);
    }
    Frame::syn_stream(stream_id, headers)
}

fn frames(s: &mut Session) -> Vec<Frame> {
    std::iter::from_fn(|| s.poll_frame()).collect()
}

fn events(s: &mut Session) -> Vec<Event> {
    std::iter::from_fn(|| s.poll_event()).collect()
}

fn reply(stream_id: u32) -> Frame {
    Frame::SynReply {
        stream_id,
        fin: false,
        headers: Headers::new(),
    }
}

fn data(stream_id: u32, len: usize, fin: bool) -> Frame {
    Frame::Data {
        stream_id,
        fin,
        data: Bytes::from(vec![7; len]),
    }
}

/// A session with kubectl's request 0 to port 8080 open: error stream 1, data stream 3.
fn paired() -> Session {
    let mut s = Session::new();
    s.receive(open(1, "error", "8080", Some("0"))).unwrap();
    s.receive(open(3, "data", "8080", Some("0"))).unwrap();
    frames(&mut s);
    events(&mut s);
    s
}

/// [`paired`], with a client that has shown it keeps windows (an empty SETTINGS).
fn paired_kept() -> Session {
    let mut s = paired();
    s.receive(Frame::Settings {
        clear: false,
        entries: vec![],
    })
    .unwrap();
    assert_eq!(s.client_flow_control(), FlowControl::Kept);
    s
}

#[test]
fn pairs_kubectls_streams_by_request_id() {
    let mut s = Session::new();
    s.receive(open(1, "error", "8080", Some("0"))).unwrap();
    assert_eq!(events(&mut s), []);
    assert_eq!(s.pending_requests().collect::<Vec<_>>(), ["0"]);
    s.receive(open(3, "error", "9090", Some("1"))).unwrap();
    s.receive(open(5, "data", "8080", Some("0"))).unwrap();
    s.receive(open(7, "data", "9090", Some("1"))).unwrap();
    assert_eq!(frames(&mut s), [reply(1), reply(3), reply(5), reply(7)]);
    assert_eq!(
        events(&mut s),
        [
            Event::Request {
                request_id: "0".into(),
                port: 8080,
                data_stream: 5,
                error_stream: 1
            },
            Event::Request {
                request_id: "1".into(),
                port: 9090,
                data_stream: 7,
                error_stream: 3
            },
        ]
    );
    assert_eq!(s.pending_requests().count(), 0);
    assert_eq!(s.stream_kind(5), Some(StreamKind::Data));
    assert_eq!(s.stream_kind(3), Some(StreamKind::Error));
}

#[test]
fn legacy_clients_without_request_id() {
    let mut s = Session::new();
    s.receive(open(1, "error", "80", None)).unwrap();
    s.receive(open(3, "data", "80", None)).unwrap();
    assert_eq!(
        events(&mut s),
        [Event::Request {
            request_id: "1".into(),
            port: 80,
            data_stream: 3,
            error_stream: 1
        }]
    );
}

#[test]
fn bad_streams_are_reset() {
    let mut s = Session::new();
    s.receive(open(1, "stdin", "80", Some("0"))).unwrap();
    s.receive(open(3, "data", "0", Some("0"))).unwrap();
    s.receive(open(5, "data", "http", Some("0"))).unwrap();
    s.receive(open(7, "data", "80", Some("0"))).unwrap();
    s.receive(open(9, "data", "80", Some("0"))).unwrap();
    s.receive(open(11, "error", "81", Some("0"))).unwrap();
    let rst = |stream_id| Frame::RstStream {
        stream_id,
        status: rst_status::PROTOCOL_ERROR,
    };
    assert_eq!(
        frames(&mut s),
        [rst(1), rst(3), rst(5), reply(7), rst(9), rst(11)]
    );
    assert_eq!(events(&mut s), []);
}

#[test]
fn stream_ids_must_be_odd_and_increasing() {
    for (first, second) in [(3, 1), (3, 3), (1, 2)] {
        let mut s = Session::new();
        s.receive(open(first, "data", "80", Some("0"))).unwrap();
        assert!(s.receive(open(second, "error", "80", Some("0"))).is_err());
        assert_eq!(
            frames(&mut s).last(),
            Some(&Frame::GoAway {
                last_good_stream_id: first,
                status: goaway_status::PROTOCOL_ERROR
            })
        );
    }
    let mut s = Session::new();
    let e = s.receive(reply(1)).unwrap_err();
    assert!(e.to_string().contains("SYN_REPLY"));
    assert_eq!(e, SessionError("SYN_REPLY from the client"));
}

#[test]
fn answers_client_pings_only() {
    let mut s = Session::new();
    s.receive(Frame::Ping { id: 1 }).unwrap();
    s.receive(Frame::Ping { id: 2 }).unwrap();
    assert_eq!(frames(&mut s), [Frame::Ping { id: 1 }]);
    assert_eq!(s.ping(), 2);
    assert_eq!(s.ping(), 4);
    assert_eq!(
        frames(&mut s),
        [Frame::Ping { id: 2 }, Frame::Ping { id: 4 }]
    );
}

#[test]
fn data_in_and_receive_windows() {
    let mut s = paired_kept();
    s.receive(data(3, 1000, false)).unwrap();
    assert_eq!(
        events(&mut s),
        [Event::Data {
            stream_id: 3,
            data: Bytes::from(vec![7; 1000]),
            fin: false
        }]
    );
    // Under half a window consumed: nothing owed yet.
    s.consumed(3, 1000);
    assert_eq!(frames(&mut s), []);
    // Fill the rest of the stream window exactly, consume it: both windows reopen.
    s.receive(data(3, DEFAULT_WINDOW as usize - 1000, false))
        .unwrap();
    events(&mut s);
    s.consumed(3, DEFAULT_WINDOW as usize - 1000);
    assert_eq!(
        frames(&mut s),
        [
            Frame::WindowUpdate {
                stream_id: 0,
                delta: DEFAULT_WINDOW
            },
            Frame::WindowUpdate {
                stream_id: 3,
                delta: DEFAULT_WINDOW
            },
        ]
    );
    s.receive(data(3, DEFAULT_WINDOW as usize, false)).unwrap();
    events(&mut s);
    // Both windows are used up again: one byte more overruns the session's.
    assert!(s.receive(data(1, 1, false)).is_err());
}

#[test]
fn stream_window_overrun_resets_the_stream() {
    let mut s = paired_kept();
    let k = 20 * 1024;
    // 20 KiB consumed on each stream: too little for either stream's WINDOW_UPDATE, enough
    // together for the session's, which so is wider than stream 3's.
    s.receive(data(3, k, false)).unwrap();
    s.consumed(3, k);
    s.receive(data(1, k, false)).unwrap();
    s.consumed(1, k);
    assert_eq!(
        frames(&mut s),
        [Frame::WindowUpdate {
            stream_id: 0,
            delta: 2 * k as u32
        }]
    );
    s.receive(data(3, DEFAULT_WINDOW as usize - k + 1, false))
        .unwrap();
    assert_eq!(
        frames(&mut s),
        [
            // The refused bytes still went through the session window: it reopens.
            Frame::WindowUpdate {
                stream_id: 0,
                delta: DEFAULT_WINDOW - k as u32 + 1
            },
            Frame::RstStream {
                stream_id: 3,
                status: rst_status::FLOW_CONTROL_ERROR
            },
        ]
    );
    assert_eq!(s.stream_kind(3), None);
}

#[test]
fn windows_never_grow_past_64k() {
    let mut s = paired();
    // Consumed bytes that never came are not given back.
    s.consumed(3, 1 << 40);
    assert_eq!(frames(&mut s), []);
    s.receive(data(3, 40_000, false)).unwrap();
    s.consumed(3, usize::MAX);
    assert_eq!(
        frames(&mut s),
        [
            Frame::WindowUpdate {
                stream_id: 0,
                delta: 40_000
            },
            Frame::WindowUpdate {
                stream_id: 3,
                delta: 40_000
            },
        ]
    );
    s.receive(data(3, DEFAULT_WINDOW as usize, false)).unwrap();
}

#[test]
fn session_window_overrun_is_a_session_error() {
    let mut s = paired_kept();
    s.receive(data(3, DEFAULT_WINDOW as usize / 2, false))
        .unwrap();
    s.receive(data(1, DEFAULT_WINDOW as usize / 2, false))
        .unwrap();
    assert!(s.receive(data(1, 1, false)).is_err());
    assert_eq!(
        frames(&mut s),
        [Frame::GoAway {
            last_good_stream_id: 3,
            status: goaway_status::PROTOCOL_ERROR
        }]
    );
}

#[test]
fn data_on_unknown_or_closed_streams() {
    let mut s = paired();
    s.receive(data(9, 10, false)).unwrap();
    s.receive(data(3, 0, true)).unwrap();
    s.receive(data(3, 5, false)).unwrap();
    assert_eq!(
        frames(&mut s),
        [
            Frame::RstStream {
                stream_id: 9,
                status: rst_status::INVALID_STREAM
            },
            Frame::RstStream {
                stream_id: 3,
                status: rst_status::STREAM_ALREADY_CLOSED
            },
        ]
    );
    assert_eq!(
        events(&mut s),
        [Event::Data {
            stream_id: 3,
            data: Bytes::new(),
            fin: true
        }]
    );
}

#[test]
fn send_windows() {
    let mut s = paired();
    let full = DEFAULT_WINDOW as usize;
    assert_eq!(s.send_window(3), Some(full));
    assert_eq!(s.send_window(5), None);
    assert_eq!(s.send_data(5, Bytes::new(), false), Err(SendError::NotOpen));
    assert_eq!(
        s.send_data(3, Bytes::from(vec![0; full + 1]), false),
        Err(SendError::Window { available: full })
    );
    s.send_data(3, Bytes::from(vec![0; full - 10]), false)
        .unwrap();
    assert_eq!(s.send_window(3), Some(10));
    assert_eq!(s.send_window(1), Some(10), "the session window is shared");
    s.receive(Frame::WindowUpdate {
        stream_id: 3,
        delta: 100,
    })
    .unwrap();
    assert_eq!(s.send_window(3), Some(10));
    s.receive(Frame::WindowUpdate {
        stream_id: 0,
        delta: 1000,
    })
    .unwrap();
    assert_eq!(s.send_window(3), Some(110));
    assert_eq!(s.send_window(1), Some(1010));
    // The client's SETTINGS_INITIAL_WINDOW_SIZE moves every stream's send window.
    s.receive(Frame::Settings {
        clear: false,
        entries: vec![Setting {
            flags: 0,
            id: setting_id::INITIAL_WINDOW_SIZE,
            value: DEFAULT_WINDOW - 100,
        }],
    })
    .unwrap();
    assert_eq!(s.send_window(3), Some(10));
    assert_eq!(s.send_window(1), Some(1010));
    // Our FIN closes our half; the client's closes the stream.
    s.send_data(3, Bytes::new(), true).unwrap();
    assert_eq!(s.send_window(3), None);
    assert_eq!(s.stream_kind(3), Some(StreamKind::Data));
    s.receive(data(3, 0, true)).unwrap();
    assert_eq!(s.stream_kind(3), None);
    assert_eq!(
        frames(&mut s),
        [
            Frame::Data {
                stream_id: 3,
                fin: false,
                data: Bytes::from(vec![0; full - 10])
            },
            Frame::Data {
                stream_id: 3,
                fin: true,
                data: Bytes::new()
            },
        ]
    );
}

#[test]
fn bad_window_updates() {
    let mut s = paired();
    s.receive(Frame::WindowUpdate {
        stream_id: 3,
        delta: 0x7FFF_FFFF,
    })
    .unwrap();
    s.receive(Frame::WindowUpdate {
        stream_id: 1,
        delta: 0,
    })
    .unwrap();
    assert_eq!(
        frames(&mut s),
        [
            Frame::RstStream {
                stream_id: 3,
                status: rst_status::FLOW_CONTROL_ERROR
            },
            Frame::RstStream {
                stream_id: 1,
                status: rst_status::FLOW_CONTROL_ERROR
            },
        ]
    );
    assert!(
        Session::new()
            .receive(Frame::WindowUpdate {
                stream_id: 0,
                delta: 0x7FFF_FFFF
            })
            .is_err()
    );
    assert!(
        Session::new()
            .receive(Frame::WindowUpdate {
                stream_id: 0,
                delta: 0
            })
            .is_err()
    );
    let big = Frame::Settings {
        clear: false,
        entries: vec![Setting {
            flags: 0,
            id: setting_id::INITIAL_WINDOW_SIZE,
            value: 0x8000_0000,
        }],
    };
    assert!(Session::new().receive(big).is_err());
}

#[test]
fn resets_and_goaway() {
    let mut s = paired();
    s.receive(Frame::RstStream {
        stream_id: 3,
        status: rst_status::CANCEL,
    })
    .unwrap();
    s.receive(Frame::RstStream {
        stream_id: 99,
        status: rst_status::CANCEL,
    })
    .unwrap();
    s.receive(Frame::GoAway {
        last_good_stream_id: 0,
        status: 0,
    })
    .unwrap();
    assert_eq!(
        events(&mut s),
        [
            Event::Reset {
                stream_id: 3,
                status: rst_status::CANCEL
            },
            Event::GoAway {
                last_good_stream_id: 0
            }
        ]
    );
    // Half a request whose partner was reset is forgotten.
    s.receive(open(5, "error", "80", Some("7"))).unwrap();
    s.reset(5, rst_status::CANCEL);
    assert_eq!(s.pending_requests().count(), 0);
    s.go_away();
    s.go_away();
    s.receive(open(7, "data", "80", Some("8"))).unwrap();
    assert_eq!(
        frames(&mut s),
        [
            reply(5),
            Frame::RstStream {
                stream_id: 5,
                status: rst_status::CANCEL
            },
            Frame::GoAway {
                last_good_stream_id: 5,
                status: goaway_status::OK
            },
            Frame::RstStream {
                stream_id: 7,
                status: rst_status::REFUSED_STREAM
            },
        ]
    );
    // HEADERS with FIN closes the client's half; unknown frames are ignored.
    let mut s = paired();
    s.receive(Frame::Headers {
        stream_id: 3,
        fin: true,
        headers: Headers::new(),
    })
    .unwrap();
    s.receive(Frame::Unknown {
        frame_type: 10,
        flags: 0,
        payload: Bytes::new(),
    })
    .unwrap();
    s.send_data(3, Bytes::new(), true).unwrap();
    assert_eq!(s.stream_kind(3), None);
}

#[test]
fn a_client_keeping_no_windows_overruns_them_and_is_served() {
    // Go's spdystream (kubectl's) neither sends WINDOW_UPDATE nor waits for one.
    let mut s = paired();
    assert_eq!(s.client_flow_control(), FlowControl::Unknown);
    s.receive(data(3, DEFAULT_WINDOW as usize, false)).unwrap();
    assert_eq!(s.client_flow_control(), FlowControl::Unknown);
    s.receive(data(3, 1000, false)).unwrap();
    assert_eq!(s.client_flow_control(), FlowControl::Ignored);
    assert_eq!(events(&mut s).len(), 2);
    assert_eq!(frames(&mut s), []);
    // What it sent is given back in full as it is consumed.
    s.consumed(3, DEFAULT_WINDOW as usize + 1000);
    assert_eq!(
        frames(&mut s),
        [
            Frame::WindowUpdate {
                stream_id: 0,
                delta: DEFAULT_WINDOW + 1000
            },
            Frame::WindowUpdate {
                stream_id: 3,
                delta: DEFAULT_WINDOW + 1000
            },
        ]
    );
    // The windows it never reopens do not hold our data back.
    let big = Bytes::from(vec![1; 2 * DEFAULT_WINDOW as usize]);
    s.send_data(3, big, false).unwrap();
    assert!(s.send_window(3).unwrap() > DEFAULT_WINDOW as usize);
}

#[test]
fn the_caller_may_declare_a_client_keeps_no_windows() {
    let mut s = paired();
    s.send_data(3, Bytes::from(vec![1; DEFAULT_WINDOW as usize]), false)
        .unwrap();
    assert_eq!(s.send_window(3), Some(0));
    s.assume_no_client_windows();
    assert_eq!(s.client_flow_control(), FlowControl::Ignored);
    assert!(s.send_window(3).unwrap() > 0);

    // A client that has sent WINDOW_UPDATE keeps windows whatever the caller says.
    let mut s = paired();
    s.receive(Frame::WindowUpdate {
        stream_id: 3,
        delta: 1,
    })
    .unwrap();
    s.assume_no_client_windows();
    assert_eq!(s.client_flow_control(), FlowControl::Kept);
}

#[test]
fn a_wider_session_window_is_opened_and_given_back() {
    let mut s = Session::with_session_window(1 << 20);
    assert_eq!(
        frames(&mut s),
        [Frame::WindowUpdate {
            stream_id: 0,
            delta: (1 << 20) - DEFAULT_WINDOW
        }]
    );
    s.receive(Frame::Settings {
        clear: false,
        entries: vec![],
    })
    .unwrap();
    // Sixteen streams each fill their window; none is consumed; the session holds.
    for i in 0..16u32 {
        let (error, data_id) = (4 * i + 1, 4 * i + 3);
        let request = i.to_string();
        s.receive(open(error, "error", "80", Some(&request)))
            .unwrap();
        s.receive(open(data_id, "data", "80", Some(&request)))
            .unwrap();
        s.receive(data(data_id, DEFAULT_WINDOW as usize, false))
            .unwrap();
    }
    frames(&mut s);
    assert_eq!(s.client_flow_control(), FlowControl::Kept);
    // Then the first is consumed: its window and the session's reopen.
    s.consumed(3, DEFAULT_WINDOW as usize);
    assert_eq!(
        frames(&mut s),
        [
            Frame::WindowUpdate {
                stream_id: 0,
                delta: DEFAULT_WINDOW
            },
            Frame::WindowUpdate {
                stream_id: 3,
                delta: DEFAULT_WINDOW
            },
        ]
    );
    // The window is full again after 64 KiB more, and one byte over it is an error.
    s.receive(open(65, "error", "80", Some("16"))).unwrap();
    s.receive(open(67, "data", "80", Some("16"))).unwrap();
    s.receive(data(67, DEFAULT_WINDOW as usize, false)).unwrap();
    assert!(s.receive(data(67, 1, false)).is_err());
}
