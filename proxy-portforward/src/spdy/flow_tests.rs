use std::collections::VecDeque;

use bytes::Bytes;

use super::{Breach, DEFAULT_WINDOW, FlowControl, MAX_WINDOW, SendError, StreamFlow, Windows};
use crate::spdy::frame::{Frame, Setting, rst_status, setting_id};

const HALF: usize = DEFAULT_WINDOW as usize / 2;

/// Windows of `size` and one open stream (id 1), the opening frames dropped.
fn windows(size: u32) -> (Windows, StreamFlow, VecDeque<Frame>) {
    stream_windows(size, DEFAULT_WINDOW)
}

/// Windows of `size`, streams' of `stream_size`, and one open stream (id 1), the opening
/// frames dropped.
fn stream_windows(size: u32, stream_size: u32) -> (Windows, StreamFlow, VecDeque<Frame>) {
    let mut frames = VecDeque::new();
    let w = Windows::new(size, stream_size, &mut frames);
    let s = w.stream(false, false);
    (w, s, VecDeque::new())
}

fn updates(frames: &mut VecDeque<Frame>) -> Vec<(u32, u32)> {
    frames
        .drain(..)
        .map(|f| match f {
            Frame::WindowUpdate { stream_id, delta } => (stream_id, delta),
            other => panic!("not a WINDOW_UPDATE: {other:?}"),
        })
        .collect()
}

fn initial_window(value: u32) -> Setting {
    Setting {
        flags: 0,
        id: setting_id::INITIAL_WINDOW_SIZE,
        value,
    }
}

#[test]
fn a_session_window_past_the_default_is_opened_and_clamped() {
    let mut frames = VecDeque::new();
    Windows::new(DEFAULT_WINDOW, DEFAULT_WINDOW, &mut frames);
    Windows::new(1, DEFAULT_WINDOW, &mut frames);
    assert!(frames.is_empty());
    Windows::new(u32::MAX, DEFAULT_WINDOW, &mut frames);
    assert_eq!(
        updates(&mut frames),
        [(0, MAX_WINDOW as u32 - DEFAULT_WINDOW)]
    );
}

#[test]
fn a_window_update_goes_out_once_half_a_window_is_owed() {
    let (mut w, mut s, mut frames) = windows(DEFAULT_WINDOW);
    w.data(HALF + 100, Some(&mut s), &mut frames, "overran")
        .unwrap();
    w.consumed(1, Some(&mut s), HALF - 1, &mut frames);
    assert!(frames.is_empty(), "under half a window owed");
    w.consumed(1, Some(&mut s), 1, &mut frames);
    assert_eq!(updates(&mut frames), [(0, HALF as u32), (1, HALF as u32)]);
}

#[test]
fn a_large_session_window_is_given_back_by_half_the_default() {
    let (mut w, mut s, mut frames) = windows(1 << 20);
    w.data(HALF, Some(&mut s), &mut frames, "overran").unwrap();
    w.consumed(1, Some(&mut s), HALF, &mut frames);
    assert_eq!(updates(&mut frames), [(0, HALF as u32), (1, HALF as u32)]);
}

#[test]
fn a_window_never_grows_past_its_size() {
    let (mut w, mut s, mut frames) = windows(DEFAULT_WINDOW);
    w.data(40_000, Some(&mut s), &mut frames, "overran")
        .unwrap();
    // More reported consumed than was received: only what was received comes back.
    w.consumed(1, Some(&mut s), 1 << 30, &mut frames);
    assert_eq!(updates(&mut frames), [(0, 40_000), (1, 40_000)]);
    w.consumed(1, Some(&mut s), usize::MAX, &mut frames);
    assert!(frames.is_empty());
    // The full window is open again, and no more: one byte past it is an overrun.
    w.window_update(0, 1, None).unwrap();
    w.data(
        DEFAULT_WINDOW as usize,
        Some(&mut s),
        &mut frames,
        "overran",
    )
    .unwrap();
    assert_eq!(
        w.data(1, Some(&mut s), &mut frames, "overran"),
        Err(Breach::Session("overran"))
    );
}

#[test]
fn a_stream_whose_remote_half_is_closed_gets_no_window_back() {
    let (mut w, mut s, mut frames) = windows(DEFAULT_WINDOW);
    w.data(HALF, Some(&mut s), &mut frames, "overran").unwrap();
    s.remote_closed = true;
    w.consumed(1, Some(&mut s), HALF, &mut frames);
    assert_eq!(updates(&mut frames), [(0, HALF as u32)]);
}

#[test]
fn data_refused_is_given_back_to_the_session() {
    let (mut w, mut s, mut frames) = windows(DEFAULT_WINDOW);
    assert_eq!(
        w.data(HALF, None, &mut frames, "overran"),
        Err(Breach::Stream(rst_status::INVALID_STREAM))
    );
    assert_eq!(updates(&mut frames), [(0, HALF as u32)]);
    s.remote_closed = true;
    assert_eq!(
        w.data(HALF, Some(&mut s), &mut frames, "overran"),
        Err(Breach::Stream(rst_status::STREAM_ALREADY_CLOSED))
    );
    assert_eq!(updates(&mut frames), [(0, HALF as u32)]);
}

#[test]
fn an_overrun_with_windows_kept_is_a_flow_control_error() {
    let (mut w, mut s, mut frames) = windows(1 << 20);
    w.window_update(0, 1, None).unwrap();
    assert_eq!(w.flow_control(), FlowControl::Kept);
    w.data(
        DEFAULT_WINDOW as usize,
        Some(&mut s),
        &mut frames,
        "overran",
    )
    .unwrap();
    assert_eq!(
        w.data(10, Some(&mut s), &mut frames, "overran"),
        Err(Breach::Stream(rst_status::FLOW_CONTROL_ERROR))
    );
    assert_eq!(w.flow_control(), FlowControl::Kept, "still kept");
    // The refused bytes went back to the session window, nothing else yet.
    assert!(frames.is_empty());
}

#[test]
fn an_overrun_before_any_window_update_is_taken() {
    let (mut w, mut s, mut frames) = windows(DEFAULT_WINDOW);
    w.data(
        DEFAULT_WINDOW as usize + 10,
        Some(&mut s),
        &mut frames,
        "overran",
    )
    .unwrap();
    assert_eq!(w.flow_control(), FlowControl::Ignored);
    // Windows kept later do not bring the rules back.
    w.window_update(1, 5, Some(&mut s)).unwrap();
    assert_eq!(w.flow_control(), FlowControl::Ignored);
    w.data(1 << 20, Some(&mut s), &mut frames, "overran")
        .unwrap();
}

#[test]
fn a_peer_keeping_no_windows_is_never_blocked() {
    let (mut w, mut s, mut frames) = windows(DEFAULT_WINDOW);
    assert_eq!(w.send_window(&s), Some(DEFAULT_WINDOW as usize));
    w.assume_no_windows();
    assert_eq!(w.flow_control(), FlowControl::Ignored);
    for _ in 0..4 {
        assert_eq!(w.send_window(&s), Some(MAX_WINDOW as usize));
        let data = Bytes::from(vec![0; DEFAULT_WINDOW as usize]);
        assert_eq!(w.send(1, Some(&mut s), data, false, &mut frames), Ok(false));
    }
    assert_eq!(frames.len(), 4);
}

#[test]
fn a_peer_that_keeps_windows_is_not_taken_for_one_that_keeps_none() {
    let (mut w, s, _) = windows(DEFAULT_WINDOW);
    w.settings(&[], std::iter::empty()).unwrap();
    w.assume_no_windows();
    assert_eq!(w.flow_control(), FlowControl::Kept);
    assert_eq!(w.send_window(&s), Some(DEFAULT_WINDOW as usize));
}

#[test]
fn sending_is_bounded_by_the_smaller_window() {
    let (mut w, mut s, mut frames) = windows(DEFAULT_WINDOW);
    let mut other = w.stream(false, false);
    let data = Bytes::from(vec![0; DEFAULT_WINDOW as usize - 10]);
    assert_eq!(w.send(1, Some(&mut s), data, false, &mut frames), Ok(false));
    assert_eq!(w.send_window(&s), Some(10));
    assert_eq!(
        w.send_window(&other),
        Some(10),
        "the session window is shared"
    );
    assert_eq!(
        w.send(
            3,
            Some(&mut other),
            Bytes::from_static(&[0; 11]),
            false,
            &mut frames
        ),
        Err(SendError::Window { available: 10 })
    );
    w.window_update(0, 1000, None).unwrap();
    w.window_update(3, 100, Some(&mut other)).unwrap();
    assert_eq!(w.send_window(&s), Some(10));
    assert_eq!(w.send_window(&other), Some(1010));
    // Our last: closed for sending, and done once the remote half is closed too.
    other.remote_closed = true;
    assert_eq!(
        w.send(3, Some(&mut other), Bytes::new(), true, &mut frames),
        Ok(true)
    );
    assert_eq!(w.send_window(&other), None);
    assert_eq!(
        w.send(3, Some(&mut other), Bytes::new(), true, &mut frames),
        Err(SendError::NotOpen)
    );
    assert_eq!(
        w.send(5, None, Bytes::new(), false, &mut frames),
        Err(SendError::NotOpen)
    );
}

#[test]
fn a_bad_window_update_is_a_breach() {
    let (mut w, mut s, _) = windows(DEFAULT_WINDOW);
    assert_eq!(
        w.window_update(0, 0, None),
        Err(Breach::Session("bad session WINDOW_UPDATE"))
    );
    assert_eq!(
        w.window_update(0, MAX_WINDOW as u32, None),
        Err(Breach::Session("bad session WINDOW_UPDATE"))
    );
    assert_eq!(
        w.window_update(1, 0, Some(&mut s)),
        Err(Breach::Stream(rst_status::FLOW_CONTROL_ERROR))
    );
    assert_eq!(w.window_update(7, 0, None), Ok(()), "no such stream");
    assert_eq!(w.send_window(&s), Some(DEFAULT_WINDOW as usize));
}

#[test]
fn settings_move_every_stream_send_window() {
    let (mut w, mut s, _) = windows(DEFAULT_WINDOW);
    w.window_update(0, 1 << 20, None).unwrap();
    w.settings(&[initial_window(1000)], [&mut s].into_iter())
        .unwrap();
    assert_eq!(w.send_window(&s), Some(1000));
    assert_eq!(w.send_window(&w.stream(false, false)), Some(1000));
    let too_big = initial_window(MAX_WINDOW as u32 + 1);
    assert_eq!(
        w.settings(&[initial_window(2000), too_big], [&mut s].into_iter()),
        Err(Breach::Session(
            "SETTINGS_INITIAL_WINDOW_SIZE over 2^31 - 1"
        ))
    );
    // The entry before the bad one is applied.
    assert_eq!(w.send_window(&s), Some(2000));
}

const STREAM: u32 = 1 << 20;

#[test]
fn a_larger_stream_window_is_advertised_with_settings() {
    let mut frames = VecDeque::new();
    let w = Windows::new(4 << 20, STREAM, &mut frames);
    assert_eq!(w.stream_size(), STREAM);
    assert!(
        matches!(frames.pop_front(), Some(Frame::Settings { clear: false, entries })
            if entries == [initial_window(STREAM)]),
        "SETTINGS first"
    );
    assert_eq!(updates(&mut frames), [(0, (4 << 20) - DEFAULT_WINDOW)]);
    // Not at the default (nor below it, which is clamped), and clamped above.
    Windows::new(4 << 20, DEFAULT_WINDOW, &mut frames);
    Windows::new(4 << 20, 1, &mut frames);
    assert_eq!(updates(&mut frames), [(0, (4 << 20) - DEFAULT_WINDOW); 2]);
    let w = Windows::new(DEFAULT_WINDOW, u32::MAX, &mut frames);
    assert_eq!(w.stream_size(), MAX_WINDOW as u32);
    assert!(
        matches!(frames.pop_front(), Some(Frame::Settings { entries, .. })
            if entries == [initial_window(MAX_WINDOW as u32)])
    );
    assert!(frames.is_empty());
}

#[test]
fn a_stream_may_receive_its_larger_window() {
    let (mut w, mut s, mut frames) = stream_windows(4 << 20, STREAM);
    // A peer that keeps windows, and sent before it saw our SETTINGS: counted against ours.
    w.window_update(0, 1, None).unwrap();
    assert_eq!(w.flow_control(), FlowControl::Kept);
    for _ in 0..STREAM / 32_768 {
        w.data(32_768, Some(&mut s), &mut frames, "overran")
            .unwrap();
    }
    assert_eq!(w.flow_control(), FlowControl::Kept);
    assert!(frames.is_empty());
    // A new stream starts with the larger window too.
    let mut other = w.stream(false, false);
    w.data(STREAM as usize, Some(&mut other), &mut frames, "overran")
        .unwrap();
}

#[test]
fn a_larger_stream_window_is_given_back_by_half_its_size() {
    let (mut w, mut s, mut frames) = stream_windows(4 << 20, STREAM);
    let half = STREAM as usize / 2;
    w.data(STREAM as usize, Some(&mut s), &mut frames, "overran")
        .unwrap();
    w.consumed(1, Some(&mut s), half - 1, &mut frames);
    // The session's come back by 32 KiB; the stream's not until half of 1 MiB is owed.
    assert!(updates(&mut frames).iter().all(|&(id, _)| id == 0));
    w.consumed(1, Some(&mut s), 1, &mut frames);
    let u = updates(&mut frames);
    assert_eq!(u.iter().filter(|&&(id, _)| id == 1).count(), 1);
    assert_eq!(u.last(), Some(&(1, half as u32)));
    // Consumed past what was received: the stream window stops at its size.
    w.consumed(1, Some(&mut s), 1 << 30, &mut frames);
    let u = updates(&mut frames);
    assert_eq!(u.last(), Some(&(1, half as u32)));
    w.consumed(1, Some(&mut s), 1 << 30, &mut frames);
    assert!(updates(&mut frames).iter().all(|&(id, _)| id == 0));
}

#[test]
fn an_overrun_of_a_larger_stream_window_with_windows_kept_is_a_flow_control_error() {
    let (mut w, mut s, mut frames) = stream_windows(4 << 20, STREAM);
    w.settings(&[], std::iter::empty()).unwrap();
    assert_eq!(w.flow_control(), FlowControl::Kept);
    w.data(STREAM as usize, Some(&mut s), &mut frames, "overran")
        .unwrap();
    assert_eq!(
        w.data(1, Some(&mut s), &mut frames, "overran"),
        Err(Breach::Stream(rst_status::FLOW_CONTROL_ERROR))
    );
    assert_eq!(w.flow_control(), FlowControl::Kept, "still kept");
}
