//! Keyboard and mouse end to end: the project's client sends input packets over the real encrypted
//! control channel, the host injects them (XTEST) into the session's own Xvfb, and an X client of
//! the project's own (`wolf-xevents`) running as the app writes down what it received, in order.

use std::time::Duration;

use wolf_client::video::announce_sdp;
use wolf_client::{GameStreamClient, PairOutcome};
use wolf_protocol::control::MSG_INPUT;
use wolf_protocol::input::{InputEvent, MOD_CTRL, MOD_SHIFT, MouseButton, encode};
use wolf_protocol::rtsp::SS_ENC_CONTROL_V2;
use wolf_rs::config::{App, AppDisplay, Config, DisplayKind};
use wolf_testkit::config::{app, process_runner};
use wolf_testkit::session::{ControlEvent, EnetClient, rtsp_to_play};
use wolf_testkit::{ConfigBuilder, PIN, TestHost, until};

/// An app whose display (at the client's mode) shows `wolf-xevents`, writing to `$HOME/events`.
fn recorder_app() -> App {
    let bin = wolf_testkit::workspace::bin("wolf-xevents");
    let script = format!("exec '{}' \"$HOME/events\"", bin.display());
    App {
        display: AppDisplay { kind: DisplayKind::Virtual, ..AppDisplay::default() },
        ..app(7, "Recorder", process_runner(&["sh", "-c", &script]))
    }
}

struct Recording {
    host: TestHost,
    client: GameStreamClient,
    control: EnetClient,
    events: std::path::PathBuf,
}

/// A host on display numbers from `first`; a paired client launched the recorder at 1280x720 and
/// connected its control channel; the recorder is ready.
async fn recording(first: u32) -> Recording {
    let host = TestHost::start(ConfigBuilder::loopback().pin(PIN).with(|c: &mut Config| {
        c.apps.push(recorder_app());
        c.desktop.first_display = first;
        c.desktop.max_displays = 1;
    }))
    .await;
    let mut client = host.client();
    assert_eq!(client.pair(PIN).await.unwrap(), PairOutcome::Paired);
    let launched = client.launch("7", "1280x720x30").await.unwrap();
    assert_eq!(launched.reply.field("gamesession").as_deref(), Some("1"), "{}", launched.reply.text());
    let rtsp = launched.rtsp().unwrap();
    let played = rtsp_to_play(&rtsp, &announce_sdp(1280, 720, 30, 1000, SS_ENC_CONTROL_V2)).await.unwrap();
    let control = EnetClient::connect(played.control, played.connect_data, launched.rikey);
    let (event, control) =
        tokio::task::spawn_blocking(move || (control.events.recv_timeout(Duration::from_secs(30)), control))
            .await
            .unwrap();
    assert!(matches!(event, Ok(ControlEvent::Connected)), "control: {event:?}");
    let events = host.dir.path().join("apps").join(client.identity.cert.fingerprint_hex()).join("7").join("events");
    until("the recorder is ready", || std::fs::read_to_string(&events).is_ok_and(|t| t.starts_with("ready"))).await;
    Recording { host, client, control, events }
}

impl Recording {
    fn send(&self, events: &[InputEvent]) {
        for e in events {
            self.control.send(MSG_INPUT, &encode(e));
        }
    }

    async fn lines(&self, n: usize) -> Vec<String> {
        lines(&self.events, n).await
    }
}

/// The recorder's lines after `ready`, once there are `n` of them (bounded wait).
async fn lines(events: &std::path::Path, n: usize) -> Vec<String> {
    let read =
        || std::fs::read_to_string(events).unwrap_or_default().lines().skip(1).map(str::to_owned).collect::<Vec<_>>();
    let mut got = read();
    for _ in 0..400 {
        if got.len() >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
        got = read();
    }
    got
}

fn key(vk: u8, down: bool, modifiers: u8) -> InputEvent {
    InputEvent::Key { down, vk, modifiers, flags: 0 }
}

/// Press and release, as a client sends a tap.
fn tap(vk: u8, modifiers: u8) -> [InputEvent; 2] {
    [key(vk, true, modifiers), key(vk, false, modifiers)]
}

fn press(keysym: u32, state: u16) -> String {
    format!("key_press {keysym:#x} state={state:#x}")
}

fn release(keysym: u32, state: u16) -> String {
    format!("key_release {keysym:#x} state={state:#x}")
}

/// X modifier state bits the recorder reports.
const SHIFT: u16 = 0x1;
const CONTROL: u16 = 0x4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_text_and_the_mouse_reach_the_app_in_order() {
    let r = recording(300).await;
    let mut want = Vec::new();
    let mut sent = Vec::new();

    // Shift+A, Ctrl+C, Enter, Left, Up.
    sent.extend([key(0xA0, true, 0), key(0x41, true, MOD_SHIFT), key(0x41, false, MOD_SHIFT), key(0xA0, false, 0)]);
    want.extend([press(0xffe1, 0), press(0x41, SHIFT), release(0x41, SHIFT), release(0xffe1, SHIFT)]);
    sent.extend([key(0xA2, true, 0), key(0x43, true, MOD_CTRL), key(0x43, false, MOD_CTRL), key(0xA2, false, 0)]);
    want.extend([press(0xffe3, 0), press(0x63, CONTROL), release(0x63, CONTROL), release(0xffe3, CONTROL)]);
    for (vk, keysym) in [(0x0D, 0xff0d), (0x25, 0xff51), (0x26, 0xff52)] {
        sent.extend(tap(vk, 0));
        want.extend([press(keysym, 0), release(keysym, 0)]);
    }
    // UTF-8 text, one code point per packet as clients send it; characters the keyboard lacks
    // (é, ✓) are typed through a spare keycode.
    for c in "héllo ✓".chars() {
        sent.push(InputEvent::Text(c.to_string()));
        let keysym = wolf_rs::input::keymap::char_keysym(c);
        want.extend([press(keysym, 0), release(keysym, 0)]);
    }
    // Absolute to the middle of the client's 1280x720 (the display is 1280x720), then relative.
    sent.push(InputEvent::MousePosition { x: 640, y: 360, width: 1280, height: 720 });
    want.push("motion 640 360".into());
    sent.push(InputEvent::MouseMove { dx: 10, dy: -5 });
    want.push("motion 650 355".into());
    // Half the reference size is half the display, whatever the client's size.
    sent.push(InputEvent::MousePosition { x: 320, y: 90, width: 640, height: 360 });
    want.push("motion 640 180".into());
    for (button, x) in [(MouseButton::Left, 1), (MouseButton::Right, 3), (MouseButton::X1, 8)] {
        sent.push(InputEvent::MouseButton { down: true, button });
        sent.push(InputEvent::MouseButton { down: false, button });
        want.extend([format!("button_press {x}"), format!("button_release {x}")]);
    }
    // Scroll: a notch up, two down, two half notches up make one; right, then left.
    for amount in [120, -240, 60, 60] {
        sent.push(InputEvent::Scroll { amount });
    }
    for b in [4, 5, 5, 4] {
        want.extend([format!("button_press {b}"), format!("button_release {b}")]);
    }
    for amount in [120, -120] {
        sent.push(InputEvent::HScroll { amount });
    }
    for b in [7, 6] {
        want.extend([format!("button_press {b}"), format!("button_release {b}")]);
    }
    r.send(&sent);
    let got = r.lines(want.len()).await;
    assert_eq!(got, want, "the app saw exactly what the client sent, in order");
    println!("what the app on the session's display saw ({} events):\n{}", got.len(), got.join("\n"));

    // The session process reports its counters twice a second: they reach /metrics soon after.
    let metrics = r.host.running().host.metrics.clone();
    until("the input counted in /metrics", || {
        metrics.input_events.with_label_values(&["keyboard"]).get() == 14
            && metrics.input_events.with_label_values(&["text"]).get() == 7
    })
    .await;
    let m = metrics.render().unwrap();
    assert!(!m.contains("wolf_input_dropped_total{reason=\"queue_full\"} 1"), "nothing dropped: {m}");
    r.host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_with_a_key_and_a_button_down_leaves_nothing_pressed() {
    let r = recording(310).await;
    r.send(&[key(0x42, true, 0), InputEvent::MouseButton { down: true, button: MouseButton::Left }]);
    let held = r.lines(2).await;
    assert_eq!(held, vec![press(0x62, 0), "button_press 1".to_owned()]);
    let Recording { host, client: _client, control, events } = r;
    assert!(tokio::task::spawn_blocking(move || control.leave()).await.unwrap(), "the host saw the client leave");
    let got = lines(&events, 4).await;
    // The key goes first (the button still down: its state has Button1), then the button; no
    // repeats from the server while the key was held (clients repeat keys themselves).
    let want = [release(0x62, 0x100), "button_release 1".to_owned()];
    assert_eq!(got[2..], want, "released when the client left: {got:?}");
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn input_for_a_session_without_a_display_is_counted_and_dropped() {
    let host = TestHost::start(ConfigBuilder::loopback().pin(PIN)).await;
    let mut client = host.client();
    assert_eq!(client.pair(PIN).await.unwrap(), PairOutcome::Paired);
    let launched = client.launch("1", "640x360x30").await.unwrap();
    let played =
        rtsp_to_play(&launched.rtsp().unwrap(), &announce_sdp(640, 360, 30, 500, SS_ENC_CONTROL_V2)).await.unwrap();
    let control = EnetClient::connect(played.control, played.connect_data, launched.rikey);
    let (event, control) =
        tokio::task::spawn_blocking(move || (control.events.recv_timeout(Duration::from_secs(30)), control))
            .await
            .unwrap();
    assert!(matches!(event, Ok(ControlEvent::Connected)));
    for e in tap(0x41, 0) {
        control.send(MSG_INPUT, &encode(&e));
    }
    // And a malformed one.
    control.send(MSG_INPUT, &[0, 0, 0, 9, 3, 0, 0, 0]);
    // This machine's kernel has no uinput: /health says so, keyboard and mouse work regardless.
    if !std::path::Path::new("/dev/uinput").exists() {
        let health = host.running().health.report(0, false).1;
        let gamepads = health["checks"]["gamepads"].as_str().unwrap_or_default().to_owned();
        assert!(gamepads.starts_with("unavailable: /dev/uinput is missing"), "{health}");
    }
    let metrics = host.running().host.metrics.clone();
    until("the drops are counted", || {
        metrics.input_dropped.with_label_values(&["no_display"]).get() == 2
            && metrics.input_dropped.with_label_values(&["malformed"]).get() == 1
    })
    .await;
    // Rumble a pad's app played goes to the client as the control channel's rumble message.
    let session = host.running().host.sessions.for_client(&client.identity.cert.fingerprint_hex()).unwrap().id;
    let rumble = wolf_rs::session_process::wire::Command::Rumble { number: 0, low: 0x8000, high: 0x4000 };
    let link = host.running().host.sessions.live(session).and_then(|l| l.link()).expect("its session process");
    link.request(rumble).await.unwrap();
    let got = tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while std::time::Instant::now() < deadline {
            if let Ok(ControlEvent::Message(t, payload)) = control.events.recv_timeout(Duration::from_secs(1))
                && t == wolf_protocol::input::MSG_RUMBLE
            {
                return Some(payload);
            }
        }
        None
    })
    .await
    .unwrap();
    assert_eq!(
        got,
        Some(wolf_protocol::input::rumble_payload(0, 0x8000, 0x4000).to_vec()),
        "the client got the rumble"
    );
    host.stop().await;
}

/// A flood of input: the control thread never waits on the display (each event is queued at
/// once, the queue giving up motion first), its watchdog heartbeat keeps beating, the pointer ends
/// where the client put it, and a key sent after the flood arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_input_never_stalls_the_control_thread_nor_loses_keys_or_position() {
    const N: usize = 20_000;
    let r = recording(320).await;
    r.send(&[InputEvent::MousePosition { x: 640, y: 360, width: 1280, height: 720 }]);
    assert_eq!(r.lines(1).await, vec!["motion 640 360".to_owned()]);
    // +1, -1, ...: wherever the flood is thinned, the moves add up to where it started.
    let mut flood: Vec<InputEvent> =
        (0..N).map(|i| InputEvent::MouseMove { dx: if i % 2 == 0 { 1 } else { -1 }, dy: 0 }).collect();
    flood.extend(tap(0x5A, 0));
    r.send(&flood);
    let metrics = r.host.running().host.metrics.clone();
    until("every move reached the host", || metrics.input_events.with_label_values(&["mouse_move"]).get() == N as u64)
        .await;
    let tail = [press(0x7a, 0), release(0x7a, 0)];
    let mut got = Vec::new();
    for _ in 0..400 {
        got = lines(&r.events, 1).await;
        if got.ends_with(&tail) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(got.ends_with(&tail), "the key after the flood arrived: {:?}", &got[got.len().saturating_sub(3)..]);
    let last_motion = got.iter().rev().find(|l| l.starts_with("motion")).cloned();
    assert_eq!(last_motion.as_deref(), Some("motion 640 360"), "the pointer ends where the client put it");
    let health = r.host.running().health.report(0, false).1;
    assert_eq!(health["checks"]["stalled_threads"], serde_json::json!([]), "{health}");
    let dropped = metrics.input_dropped.with_label_values(&["queue_full"]).get();
    println!(
        "{N} moves in a burst: {} pointer motions injected, {dropped} given up (queue of {})",
        got.len() - 3,
        wolf_rs::input::QUEUE
    );
    r.host.stop().await;
}
