use bytes::Bytes;

use super::*;
use crate::spdy::frame::setting_id;

fn frames(s: &mut ClientSession) -> Vec<Frame> {
    std::iter::from_fn(|| s.poll_frame()).collect()
}

fn events(s: &mut ClientSession) -> Vec<ClientEvent> {
    std::iter::from_fn(|| s.poll_event()).collect()
}

fn data(stream_id: u32, len: usize, fin: bool) -> Frame {
    Frame::Data {
        stream_id,
        fin,
        data: Bytes::from(vec![7; len]),
    }
}

#[test]
fn open_sends_settings_then_kubectls_pair_of_streams() {
    let mut s = ClientSession::new();
    let first = s.open(80).unwrap();
    let second = s.open(81).unwrap();
    assert_eq!(
        (first.request_id, first.error_stream, first.data_stream),
        (0, 1, 3)
    );
    assert_eq!(
        (second.request_id, second.error_stream, second.data_stream),
        (1, 5, 7)
    );
    let f = frames(&mut s);
    assert!(matches!(&f[0], Frame::Settings { entries, .. }
        if entries[0].id == setting_id::INITIAL_WINDOW_SIZE && entries[0].value == DEFAULT_WINDOW));
    let Frame::SynStream {
        stream_id: 1,
        headers,
        ..
    } = &f[1]
    else {
        panic!("{f:?}")
    };
    assert_eq!(headers.get_str("streamtype"), Some("error"));
    assert_eq!(headers.get_str("port"), Some("80"));
    assert_eq!(headers.get_str("requestid"), Some("0"));
    assert_eq!(
        f[2],
        Frame::Data {
            stream_id: 1,
            fin: true,
            data: Bytes::new()
        }
    );
    let Frame::SynStream {
        stream_id: 3,
        headers,
        ..
    } = &f[3]
    else {
        panic!("{f:?}")
    };
    assert_eq!(headers.get_str("streamtype"), Some("data"));
    assert_eq!(headers.get_str("requestid"), Some("0"));
    let Frame::SynStream {
        stream_id: 7,
        headers,
        ..
    } = &f[6]
    else {
        panic!("{f:?}")
    };
    assert_eq!(headers.get_str("requestid"), Some("1"));
}

#[test]
fn a_larger_session_window_is_opened_after_the_settings() {
    let mut s = ClientSession::with_session_window(1 << 20);
    let f = frames(&mut s);
    assert_eq!(
        f[1],
        Frame::WindowUpdate {
            stream_id: 0,
            delta: (1 << 20) - DEFAULT_WINDOW
        }
    );
}

#[test]
fn sending_stops_at_the_nodes_window_until_it_gives_some_back() {
    let mut s = ClientSession::new();
    let o = s.open(80).unwrap();
    frames(&mut s);
    s.receive(Frame::WindowUpdate {
        stream_id: 0,
        delta: 1 << 20,
    })
    .unwrap();
    assert_eq!(s.server_flow_control(), FlowControl::Kept);
    assert_eq!(s.send_window(o.data_stream), Some(DEFAULT_WINDOW as usize));
    s.send_data(o.data_stream, Bytes::from(vec![0; 65536]), false)
        .unwrap();
    assert_eq!(
        s.send_data(o.data_stream, Bytes::from_static(b"x"), false),
        Err(SendError::Window { available: 0 })
    );
    s.receive(Frame::WindowUpdate {
        stream_id: o.data_stream,
        delta: 10,
    })
    .unwrap();
    assert_eq!(s.send_window(o.data_stream), Some(10));
    assert_eq!(
        s.send_window(o.error_stream),
        None,
        "we closed our half at once"
    );
}

#[test]
fn a_ping_answered_with_no_window_update_means_the_node_keeps_no_windows() {
    let mut s = ClientSession::new();
    let o = s.open(80).unwrap();
    s.send_data(o.data_stream, Bytes::from(vec![0; 65536]), false)
        .unwrap();
    frames(&mut s);
    s.probe_windows();
    s.probe_windows();
    let f = frames(&mut s);
    assert_eq!(f, vec![Frame::Ping { id: 1 }]);
    s.receive(Frame::Ping { id: 1 }).unwrap();
    assert_eq!(s.server_flow_control(), FlowControl::Ignored);
    assert!(s.send_window(o.data_stream).unwrap() > 1 << 20);
    assert_eq!(events(&mut s), vec![ClientEvent::Pong { id: 1 }]);
}

#[test]
fn consumed_data_is_given_back_and_the_nodes_pings_echoed() {
    let mut s = ClientSession::new();
    let o = s.open(80).unwrap();
    frames(&mut s);
    s.receive(data(o.data_stream, 40_000, false)).unwrap();
    let ev = events(&mut s);
    assert!(
        matches!(&ev[..], [ClientEvent::Data { data, fin: false, .. }] if data.len() == 40_000)
    );
    s.consumed(o.data_stream, 40_000);
    assert_eq!(
        frames(&mut s),
        vec![
            Frame::WindowUpdate {
                stream_id: 0,
                delta: 40_000
            },
            Frame::WindowUpdate {
                stream_id: o.data_stream,
                delta: 40_000
            },
        ]
    );
    s.receive(Frame::Ping { id: 2 }).unwrap();
    assert_eq!(frames(&mut s), vec![Frame::Ping { id: 2 }]);
}

#[test]
fn an_overrun_stream_is_reset_and_the_others_go_on() {
    let mut s = ClientSession::with_session_window(1 << 20);
    let a = s.open(80).unwrap();
    let b = s.open(80).unwrap();
    s.receive(Frame::Settings {
        clear: false,
        entries: vec![],
    })
    .unwrap();
    frames(&mut s);
    s.receive(data(a.data_stream, 65_537, false)).unwrap();
    let f = frames(&mut s);
    assert!(
        f.contains(&Frame::RstStream {
            stream_id: a.data_stream,
            status: rst_status::FLOW_CONTROL_ERROR
        }),
        "{f:?}"
    );
    assert!(!s.is_open(a.data_stream));
    s.receive(data(b.data_stream, 10, true)).unwrap();
    let ev = events(&mut s);
    assert_eq!(ev.len(), 2, "{ev:?}");
    assert!(matches!(ev[1], ClientEvent::Data { fin: true, .. }));
}

#[test]
fn goaway_refuses_new_streams_and_resets_those_not_acted_on() {
    let mut s = ClientSession::new();
    let a = s.open(80).unwrap();
    let b = s.open(80).unwrap();
    s.receive(Frame::GoAway {
        last_good_stream_id: a.data_stream,
        status: 0,
    })
    .unwrap();
    assert!(s.open(80).is_none());
    assert!(s.is_open(a.data_stream));
    assert!(!s.is_open(b.data_stream));
    let ev = events(&mut s);
    assert!(ev.contains(&ClientEvent::Reset {
        stream_id: b.data_stream,
        status: rst_status::REFUSED_STREAM
    }));
    assert!(ev.contains(&ClientEvent::GoAway {
        last_good_stream_id: a.data_stream
    }));
}

#[test]
fn a_stream_closed_both_ways_is_forgotten_and_the_session_window_is_enforced() {
    let mut s = ClientSession::new();
    let o = s.open(80).unwrap();
    s.receive(data(o.error_stream, 0, true)).unwrap();
    assert!(!s.is_open(o.error_stream));
    s.send_data(o.data_stream, Bytes::new(), true).unwrap();
    s.receive(data(o.data_stream, 3, true)).unwrap();
    assert!(!s.is_open(o.data_stream));
    let mut s = ClientSession::new();
    let o = s.open(80).unwrap();
    let p = s.open(80).unwrap();
    s.receive(Frame::WindowUpdate {
        stream_id: 0,
        delta: 1,
    })
    .unwrap();
    s.receive(data(o.data_stream, 60_000, false)).unwrap();
    assert!(s.receive(data(p.data_stream, 10_000, false)).is_err());
    assert!(
        frames(&mut s)
            .iter()
            .any(|f| matches!(f, Frame::GoAway { .. }))
    );
}

#[test]
fn a_node_that_overruns_before_showing_windows_keeps_none_and_its_data_is_taken() {
    // The kubelet's spdystream: no SETTINGS, no WINDOW_UPDATE, our windows ignored.
    let mut s = ClientSession::new();
    let o = s.open(80).unwrap();
    frames(&mut s);
    s.receive(data(o.data_stream, 100_000, false)).unwrap();
    assert_eq!(s.server_flow_control(), FlowControl::Ignored);
    assert!(s.is_open(o.data_stream));
    let ev = events(&mut s);
    assert!(matches!(&ev[..], [ClientEvent::Data { data, .. }] if data.len() == 100_000));
    s.consumed(o.data_stream, 100_000);
    s.receive(data(o.data_stream, 100_000, true)).unwrap();
    assert_eq!(events(&mut s).len(), 1);
    assert!(s.send_window(o.data_stream).unwrap() > 1 << 20);
}

#[test]
fn a_larger_stream_window_is_the_one_settings_advertises() {
    let mut s = ClientSession::with_windows(4 << 20, 1 << 20);
    let f = frames(&mut s);
    assert_eq!(f.len(), 2, "{f:?}");
    assert!(matches!(&f[0], Frame::Settings { entries, .. }
        if entries.len() == 1
            && entries[0].id == setting_id::INITIAL_WINDOW_SIZE
            && entries[0].value == 1 << 20));
    assert!(matches!(
        f[1],
        Frame::WindowUpdate {
            stream_id: 0,
            delta
        } if delta == (4 << 20) - DEFAULT_WINDOW
    ));
}
