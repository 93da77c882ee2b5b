//! The client core on byte literals: frames from PROTOCOL.md in, frames and
//! events out, the time passed in by hand.

use std::time::{Duration, Instant};

use bytes::BytesMut;
use proptest::prelude::*;
use relais_client_core::{
    Action, ConnectError, Core, Disconnect, Event, Options, State, Update, UNKNOWN_REASON,
};
use relais_protocol::{CloseReason, RefuseReason};

const MS: Duration = Duration::from_millis(1);

/// WELCOME v1, 65536, room "r", members ["al"], resume flags, token "RT".
const WELCOME_AL: &[u8] =
    b"\x00\x00\x00\x12\x81\x00\x01\x00\x01\x00\x00\x01r\x00\x01\x02al\x00\x02RT";

fn transmit(core: &mut Core) -> Vec<u8> {
    let mut out = BytesMut::new();
    core.poll_transmit(&mut out);
    out.to_vec()
}

fn updates(core: &mut Core) -> Vec<Update> {
    std::iter::from_fn(|| core.poll_event()).collect()
}

/// A core joined as "al" in "r", at `t0`.
fn joined(t0: Instant) -> Core {
    let mut options = Options::new("al");
    options.room = "r".into();
    let mut core = Core::new(options, t0).unwrap();
    core.handle_timeout(t0);
    assert!(matches!(core.poll_action(), Some(Action::Connect { .. })));
    core.connected(t0);
    // HELLO v1, echo + resume, "al", "r", empty resume token.
    assert_eq!(
        transmit(&mut core),
        b"\x00\x00\x00\x0a\x01\x00\x01\x05\x02al\x01r\x00"
    );
    core.handle_input(WELCOME_AL, t0);
    assert!(matches!(&updates(&mut core)[..], [Update::Joined { room }] if room == "r"));
    assert_eq!(core.state(), State::Connected);
    core
}

#[test]
fn handshake_messages_presence_and_ping() {
    let t0 = Instant::now();
    let mut core = joined(t0);
    // JOINED "bob", MESSAGE from "bob" "hi", PING, LEFT 0 "bob", split
    // across reads anywhere.
    let stream: &[u8] = b"\x00\x00\x00\x05\x84\x03bob\x00\x00\x00\x07\x83\x03bobhi\x00\x00\x00\x01\x10\x00\x00\x00\x06\x85\x00\x03bob";
    for chunk in stream.chunks(3) {
        core.handle_input(chunk, t0);
    }
    let got: Vec<_> = updates(&mut core)
        .into_iter()
        .map(|u| match u {
            Update::Event(e) => e,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(got.len(), 3);
    assert_eq!(got[0], Event::Joined("bob".into()));
    assert!(matches!(&got[1], Event::Message(m) if m.sender == "bob" && m.payload == "hi"));
    assert_eq!(
        got[2],
        Event::Left {
            name: "bob".into(),
            reason: CloseReason::Normal
        }
    );
    core.send("x=1".into()).unwrap();
    // PONG first, then DATA "x=1".
    assert_eq!(
        transmit(&mut core),
        b"\x00\x00\x00\x01\x11\x00\x00\x00\x04\x02x=1"
    );
    assert_eq!(core.members(), ["al"]);
}

#[test]
fn a_refused_first_join_fails_the_connect() {
    let t0 = Instant::now();
    let mut core = Core::new(Options::new("al"), t0).unwrap();
    core.handle_timeout(t0);
    core.poll_action();
    core.connected(t0);
    transmit(&mut core);
    core.handle_input(b"\x00\x00\x00\x0c\x82\x01name taken", t0);
    let u = updates(&mut core);
    assert!(matches!(
        &u[..],
        [Update::Failed(ConnectError::Refused {
            reason: RefuseReason::NameTaken,
            ..
        })]
    ));
    assert_eq!(core.poll_action(), Some(Action::Disconnect));
    assert!(core.is_finished());
    // A name of one space never gets on the wire.
    assert!(matches!(
        Core::new(Options::new(" "), t0),
        Err(ConnectError::InvalidName(_))
    ));
}

#[test]
fn silence_pings_twice_then_reconnects_and_resumes_with_a_member_diff() {
    let t0 = Instant::now();
    let mut core = joined(t0);
    let k = Duration::from_secs(10);
    assert_eq!(core.poll_timeout(), Some(t0 + k));
    core.handle_timeout(t0 + k);
    assert_eq!(transmit(&mut core), b"\x00\x00\x00\x01\x10");
    core.handle_timeout(t0 + 2 * k);
    assert_eq!(transmit(&mut core), b"\x00\x00\x00\x01\x10");
    let t3 = t0 + 3 * k;
    core.handle_timeout(t3);
    assert_eq!(core.poll_action(), Some(Action::Disconnect));
    assert_eq!(core.state(), State::Reconnecting);
    assert!(matches!(
        &updates(&mut core)[..],
        [Update::Event(Event::Reconnecting(Disconnect::Timeout))]
    ));
    assert!(core.status().is_none());
    // Sends wait for the new connection.
    core.send("later".into()).unwrap();
    let retry_at = core.poll_timeout().unwrap();
    assert!(
        retry_at >= t3 + 50 * MS && retry_at <= t3 + 100 * MS,
        "{retry_at:?}"
    );
    core.handle_timeout(retry_at);
    assert!(matches!(core.poll_action(), Some(Action::Connect { .. })));
    core.connected(retry_at);
    // The HELLO carries the seat's token "RT".
    assert_eq!(
        transmit(&mut core),
        b"\x00\x00\x00\x0c\x01\x00\x01\x05\x02al\x01r\x02RT"
    );
    // Resumed; meanwhile "cy" joined. WELCOME members ["cy", "al"].
    core.handle_input(
        b"\x00\x00\x00\x15\x81\x00\x01\x00\x01\x00\x00\x01r\x00\x02\x02cy\x02al\x01\x02RT",
        retry_at,
    );
    let u = updates(&mut core);
    assert!(
        matches!(&u[..], [Update::Event(Event::Joined(n)), Update::Event(Event::Reconnected { resumed: true })] if n == "cy"),
        "{u:?}"
    );
    assert_eq!(core.state(), State::Connected);
    assert_eq!(transmit(&mut core), b"\x00\x00\x00\x06\x02later");
    // Lost again (end of stream); this time the server restarted: it does
    // not know the token (REFUSED 14), and the client joins afresh at once.
    core.handle_eof(retry_at);
    assert_eq!(core.poll_action(), Some(Action::Disconnect));
    updates(&mut core);
    let t = core.poll_timeout().unwrap();
    core.handle_timeout(t);
    core.poll_action();
    core.connected(t);
    transmit(&mut core);
    core.handle_input(b"\x00\x00\x00\x16\x82\x0eresume token invalid", t);
    assert_eq!(core.poll_action(), Some(Action::Disconnect));
    assert_eq!(core.poll_timeout(), Some(t));
    core.handle_timeout(t);
    core.poll_action();
    core.connected(t);
    assert_eq!(
        transmit(&mut core),
        b"\x00\x00\x00\x0a\x01\x00\x01\x05\x02al\x01r\x00"
    );
    // A fresh join in an empty room: "cy" is reported gone.
    core.handle_input(WELCOME_AL, t);
    let u = updates(&mut core);
    assert!(
        matches!(&u[..], [Update::Event(Event::Left { name, reason }), Update::Event(Event::Reconnected { resumed: false })] if name == "cy" && *reason == UNKNOWN_REASON),
        "{u:?}"
    );
}

#[test]
fn a_server_refusing_an_empty_resume_token_gets_backoff_not_a_busy_loop() {
    let t0 = Instant::now();
    let mut core = joined(t0);
    core.handle_eof(t0);
    core.poll_action();
    let mut immediate = 0;
    for _ in 0..5 {
        let now = core.poll_timeout().unwrap();
        core.handle_timeout(now);
        core.poll_action();
        core.connected(now);
        transmit(&mut core);
        core.handle_input(b"\x00\x00\x00\x16\x82\x0eresume token invalid", now);
        core.poll_action();
        immediate += usize::from(core.poll_timeout() == Some(now));
    }
    // The first 14 drops the token "RT" and retries at once; the next ones,
    // with no token to blame, wait.
    assert_eq!(immediate, 1);
    assert_eq!(core.state(), State::Reconnecting);
}

#[test]
fn cluster_unavailable_while_reconnecting_is_retried_with_backoff() {
    let t0 = Instant::now();
    let mut core = joined(t0);
    core.handle_eof(t0);
    core.poll_action();
    updates(&mut core);
    let mut now = core.poll_timeout().unwrap();
    // After the first try (about 100 ms), delays of about 200, 400, 800 ms.
    for d in [200, 400, 800] {
        core.handle_timeout(now);
        assert!(matches!(core.poll_action(), Some(Action::Connect { .. })));
        core.connected(now);
        // Each HELLO still presents the seat's token "RT".
        assert_eq!(
            transmit(&mut core),
            b"\x00\x00\x00\x0c\x01\x00\x01\x05\x02al\x01r\x02RT"
        );
        // REFUSED 15: the node cannot reach its backplane.
        core.handle_input(b"\x00\x00\x00\x15\x82\x0fcluster unavailable", now);
        assert_eq!(core.poll_action(), Some(Action::Disconnect));
        assert_eq!(core.state(), State::Reconnecting);
        assert!(core.status().is_none());
        assert!(updates(&mut core).is_empty());
        let next = core.poll_timeout().unwrap();
        assert!(
            next >= now + d / 2 * MS && next <= now + d * MS,
            "{d} ms: {:?}",
            next - now
        );
        now = next;
    }
    core.handle_timeout(now);
    core.poll_action();
    core.connected(now);
    transmit(&mut core);
    core.handle_input(WELCOME_AL, now);
    assert!(matches!(
        &updates(&mut core)[..],
        [Update::Event(Event::Reconnected { resumed: false })]
    ));
    assert_eq!(core.state(), State::Connected);
}

#[test]
fn reconnecting_gives_up_when_the_window_passes_or_the_refusal_is_final() {
    let t0 = Instant::now();
    let mut core = joined(t0);
    core.handle_eof(t0);
    core.poll_action();
    let mut now = t0;
    let mut attempts = 0;
    while core.state() == State::Reconnecting {
        now = core.poll_timeout().unwrap();
        core.handle_timeout(now);
        if let Some(Action::Connect { .. }) = core.poll_action() {
            attempts += 1;
            core.connect_failed(
                ConnectError::Io(std::io::ErrorKind::ConnectionRefused.into()),
                now,
            );
            core.poll_action();
        }
        assert!(attempts < 100);
    }
    assert!(now - t0 <= Duration::from_secs(60));
    assert!(attempts > 10, "{attempts}");
    assert!(matches!(core.status(), Some(Disconnect::ConnectionLost(_))));
    assert!(core.is_finished());

    // An expired join token is final.
    let mut core = joined(t0);
    core.handle_input(b"\x00\x00\x00\x02\x12\x01", t0); // GOODBYE 1: restart
    core.poll_action();
    let t = core.poll_timeout().unwrap();
    core.handle_timeout(t);
    core.poll_action();
    core.connected(t);
    transmit(&mut core);
    core.handle_input(b"\x00\x00\x00\x0f\x82\x09token expired", t);
    assert!(matches!(
        core.status(),
        Some(Disconnect::Refused {
            reason: RefuseReason::TokenExpired,
            ..
        })
    ));
    assert_eq!(core.state(), State::Closed);
}

#[test]
fn close_sends_queued_payloads_then_goodbye_and_waits_for_the_servers() {
    let t0 = Instant::now();
    let mut core = joined(t0);
    core.send("bye".into()).unwrap();
    core.close(t0);
    assert_eq!(core.state(), State::Closed);
    assert_eq!(core.status(), Some(&Disconnect::Closed));
    assert!(core.send("x".into()).is_err());
    assert_eq!(
        transmit(&mut core),
        b"\x00\x00\x00\x04\x02bye\x00\x00\x00\x02\x12\x00"
    );
    assert!(!core.is_finished());
    core.handle_input(b"\x00\x00\x00\x02\x12\x00", t0);
    assert_eq!(core.poll_action(), Some(Action::Disconnect));
    assert!(core.is_finished());
}

#[test]
fn the_outbound_queue_drops_its_oldest() {
    let t0 = Instant::now();
    let mut options = Options::new("al");
    options.outbound_capacity = 2;
    let mut core = Core::new(options, t0).unwrap();
    for p in ["1", "2", "3"] {
        core.send(p.into()).unwrap();
    }
    assert_eq!(core.dropped_outbound(), 1);
}

proptest! {
    /// The fuzz model's property, on every run: whatever the server sends,
    /// however it is split, the core does not panic and sees the same
    /// thing as when it arrives in one piece.
    #[test]
    fn any_bytes_any_split_same_outcome(
        stream in proptest::collection::vec(any::<u8>(), 0..300),
        cut in 1usize..17,
    ) {
        let t0 = Instant::now();
        let run = |chunks: Vec<&[u8]>| {
            let mut core = joined(t0);
            for c in chunks {
                core.handle_input(c, t0);
            }
            core.handle_eof(t0);
            (format!("{:?}", updates(&mut core)), core.state(), transmit(&mut core))
        };
        prop_assert_eq!(run(vec![&stream]), run(stream.chunks(cut).collect()));
    }
}

#[test]
fn no_limit_durations_mean_never_not_a_panic() {
    let t0 = Instant::now();
    let mut options = Options::new("al");
    options.connect_timeout = Duration::MAX;
    options.keepalive = Duration::MAX;
    options.reconnect_window = Duration::MAX;
    options.backoff_max = Duration::MAX;
    options.close_timeout = Duration::MAX;
    let mut core = Core::new(options, t0).unwrap();
    core.handle_timeout(t0);
    assert!(matches!(core.poll_action(), Some(Action::Connect { .. })));
    core.connected(t0);
    transmit(&mut core);
    core.handle_input(WELCOME_AL, t0);
    assert!(core.poll_timeout().is_some());
    for _ in 0..200 {
        core.handle_eof(t0);
        core.poll_action();
        let at = core.poll_timeout().unwrap();
        core.handle_timeout(at);
        core.poll_action();
        core.connected(at);
        transmit(&mut core);
        core.handle_input(WELCOME_AL, at);
    }
    core.close(t0);
    assert_eq!(core.state(), State::Closed);
}

#[test]
fn a_server_that_drops_every_connection_at_once_is_backed_off_then_given_up() {
    let t0 = Instant::now();
    let mut core = joined(t0);
    let mut now = t0 + Duration::from_secs(30);
    let mut delays = Vec::new();
    while core.state() != State::Closed {
        // Welcomed, then dropped straight away (GOODBYE 1), again and again.
        core.handle_input(b"\x00\x00\x00\x02\x12\x01", now);
        core.poll_action();
        let Some(at) = core.poll_timeout() else { break };
        delays.push(at - now);
        now = at;
        core.handle_timeout(now);
        core.poll_action();
        core.connected(now);
        transmit(&mut core);
        core.handle_input(WELCOME_AL, now);
        assert!(delays.len() < 100, "{delays:?}");
    }
    // Doubling to 5 s, within the 60 s window, then closed.
    assert!(delays[5] >= Duration::from_millis(1600), "{delays:?}");
    assert!(now - (t0 + Duration::from_secs(30)) <= Duration::from_secs(60));
}

#[test]
fn a_window_shorter_than_the_first_delay_still_gets_one_attempt() {
    let t0 = Instant::now();
    let mut options = Options::new("al");
    options.reconnect_window = Duration::from_millis(10);
    let mut core = Core::new(options, t0).unwrap();
    core.handle_timeout(t0);
    core.poll_action();
    core.connected(t0);
    transmit(&mut core);
    core.handle_input(WELCOME_AL, t0);
    let lost = t0 + Duration::from_secs(30);
    core.handle_eof(lost);
    core.poll_action();
    assert_eq!(core.poll_timeout(), Some(lost + Duration::from_millis(10)));
    core.handle_timeout(lost + Duration::from_millis(10));
    assert!(matches!(core.poll_action(), Some(Action::Connect { .. })));
    core.connect_failed(ConnectError::Timeout, lost + Duration::from_millis(10));
    assert_eq!(core.state(), State::Closed);
}
