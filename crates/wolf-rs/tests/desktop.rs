//! Desktop sessions, all real: each session of a display app gets its own Xvfb at the client's mode
//! and its own PulseAudio sink; the app draws and plays there; the client receives and decodes
//! that picture and that sound. Failures of either part are clear, counted, and leave nothing.
//! Every test has display numbers of its own, so tests running at once never meet.

use std::net::IpAddr;
use std::time::Duration;

use wolf_client::video::{VideoOpener, announce_sdp};
use wolf_client::{GameStreamClient, PairOutcome};
use wolf_protocol::rtsp::SS_ENC_CONTROL_V2;
use wolf_rs::config::Config;
use wolf_rs::runners::process::Role;
use wolf_testkit::config::desktop_app;
use wolf_testkit::media::{Picture, h264_last_picture, opus_stereo_samples, tone_power};
use wolf_testkit::session::{ControlEvent, EnetClient, from_first_idr, receive_audio, receive_video, rtsp_to_play};
use wolf_testkit::{ConfigBuilder, PIN, TestHost, until};

const LOOPBACK: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
const APP: &str = "5";

/// The root window in a colour of the session's own (red for even session ids, blue for odd),
/// then a 1 kHz tone into the session's sink until stopped.
const PAINT_AND_PLAY: &str = "if [ $((WOLF_SESSION_ID % 2)) = 0 ]; then c='#ff0000'; else c='#0000ff'; fi; \
    xsetroot -solid \"$c\" && exec gst-launch-1.0 -q audiotestsrc freq=1000 volume=0.5 is-live=true ! pulsesink";

/// A host whose app 5 paints and plays, with display numbers from `first` (one range per test).
fn config(first: u32, max: u32) -> ConfigBuilder {
    ConfigBuilder::loopback().pin(PIN).with(|c: &mut Config| {
        c.apps.push(desktop_app(5, "Paint", PAINT_AND_PLAY));
        c.desktop.first_display = first;
        c.desktop.max_displays = max;
    })
}

async fn paired(host: &TestHost) -> GameStreamClient {
    let mut c = host.client();
    assert_eq!(c.pair(PIN).await.expect("pairing runs"), PairOutcome::Paired);
    c
}

fn colour_of(session_id: u32) -> [u8; 3] {
    if session_id % 2 == 0 { [255, 0, 0] } else { [0, 0, 255] }
}

fn near(got: [u8; 3], want: [u8; 3]) -> bool {
    got.iter().zip(want).all(|(g, w)| g.abs_diff(w) < 48)
}

/// RTSP to PLAY at `w`x`h`, the control channel, then the decoded last picture and the received
/// stereo audio (decrypted, decoded).
async fn watch(rtsp: &wolf_client::RtspSession, rikey: [u8; 16], size: (u32, u32)) -> (Picture, Vec<f32>, EnetClient) {
    watch_with(rtsp, rikey, size, true).await
}

/// As [`watch`]; without audio when `with_audio` is false (an app that plays nothing).
async fn watch_with(
    rtsp: &wolf_client::RtspSession,
    rikey: [u8; 16],
    (w, h): (u32, u32),
    with_audio: bool,
) -> (Picture, Vec<f32>, EnetClient) {
    let played = rtsp_to_play(rtsp, &announce_sdp(w, h, 30, 3000, SS_ENC_CONTROL_V2)).await.expect("RTSP to PLAY");
    let control = EnetClient::connect(played.control, played.connect_data, rikey);
    let (event, control) =
        tokio::task::spawn_blocking(move || (control.events.recv_timeout(Duration::from_secs(30)), control))
            .await
            .unwrap();
    assert!(matches!(event, Ok(ControlEvent::Connected)), "control: {event:?}");
    let opener = VideoOpener::new(SS_ENC_CONTROL_V2, &rikey).unwrap();
    // Enough frames that the last one shows what the app drew (it draws right after the display is up).
    let frames =
        receive_video(LOOPBACK, played.video, &played.ping, &opener, 20, Duration::from_secs(90)).await.unwrap();
    let frames = from_first_idr(&frames);
    let picture = tokio::task::spawn_blocking(move || h264_last_picture(&frames)).await.unwrap().expect("decodes");
    if !with_audio {
        return (picture, Vec::new(), control);
    }
    let audio = receive_audio(LOOPBACK, played.audio, &played.ping, 200, Duration::from_secs(60)).await.unwrap();
    let opus: Vec<Vec<u8>> = audio
        .iter()
        .map(|(seq, data)| wolf_testkit::media::decrypt_audio_with(&rikey, data, *seq).expect("audio decrypts"))
        .collect();
    let samples = tokio::task::spawn_blocking(move || opus_stereo_samples(&opus)).await.unwrap().expect("Opus decodes");
    (picture, samples, control)
}

async fn health(host: &TestHost, path: &str) -> String {
    let addr = ([127, 0, 0, 1], host.running().health_port).into();
    let r = wolf_client::plain_request(addr, hyper::Method::GET, path, None).await.expect("health port answers");
    String::from_utf8_lossy(&r.body).into_owned()
}

/// Cancel the client's session and wait until it is gone (its parts stopped).
async fn cancel(host: &TestHost, c: &GameStreamClient) {
    let r = c.https_get(&c.url("/cancel", &[])).await.expect("cancel");
    assert_eq!(r.field("cancel").as_deref(), Some("1"), "{}", r.text());
    let fp = c.identity.cert.fingerprint_hex();
    for _ in 0..1000 {
        if host.running().host.sessions.for_client(&fp).is_none() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the session is still there: {:?}", host.running().host.sessions.for_client(&fp));
}

async fn wait_no_sessions(host: &TestHost) {
    for _ in 0..1000 {
        if host.running().host.sessions.is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("sessions still there: {:?}", host.running().host.sessions.list());
}

/// Processes of this host by role.
fn owned(host: &TestHost, role: Role) -> usize {
    host.running().host.planes.runners.process.owned().iter().filter(|p| p.role == role).count()
}

/// The X sockets left in `first..first+max`.
fn x_sockets(first: u32, max: u32) -> Vec<u32> {
    (first..first + max).filter(|n| wolf_rs::runners::display::socket_path(*n).exists()).collect()
}

fn sinks(host: &TestHost) -> Vec<String> {
    let audio = host.running().host.planes.runners.audio.clone();
    if !audio.answers() {
        return Vec::new();
    }
    audio.sinks().expect("the audio server lists its sinks").into_iter().map(|(_, n)| n).collect()
}

fn session_of(host: &TestHost, c: &GameStreamClient) -> wolf_rs::sessions::Session {
    host.running().host.sessions.for_client(&c.identity.cert.fingerprint_hex()).expect("the client's session")
}

fn assert_picture(p: &Picture, (w, h): (u32, u32), colour: [u8; 3]) {
    assert_eq!((p.width, p.height), (w as usize, h as usize), "the stream has the client's mode");
    // Corners and edges (the pointer sits in the middle).
    for (x, y) in [(8, 8), (p.width - 8, 8), (8, p.height - 8), (p.width - 8, p.height - 8), (p.width / 2, 8)] {
        let got = p.pixel(x, y);
        assert!(near(got, colour), "pixel ({x}, {y}) is {got:?}, the app drew {colour:?}");
    }
}

fn assert_tone(samples: &[f32]) {
    assert!(samples.len() > 48_000, "a second of audio: {} samples", samples.len());
    // Skip the start (the sink's first buffers may be silence).
    let tail = &samples[samples.len() / 2..];
    for ch in 0..2 {
        let (at_1k, total) = tone_power(tail, 2, ch, 1000.0);
        let (at_700, _) = tone_power(tail, 2, ch, 700.0);
        assert!(total > 1e-3, "channel {ch} is not silent: mean power {total}");
        assert!(at_1k > 0.5 * total, "channel {ch}: 1 kHz holds {at_1k} of {total}");
        assert!(at_700 < 0.05 * total, "channel {ch}: 700 Hz holds {at_700} of {total}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_app_draws_on_its_own_display_at_the_client_mode_and_plays_into_its_own_sink() {
    let (first, max) = (170, 4);
    let host = TestHost::start(config(first, max)).await;
    let c = paired(&host).await;
    for (w, h) in [(1280, 720), (1920, 1080)] {
        let launched = c.launch(APP, &format!("{w}x{h}x30")).await.unwrap();
        assert_eq!(launched.reply.field("gamesession").as_deref(), Some("1"), "{}", launched.reply.text());
        let s = session_of(&host, &c);
        let display = s.display.clone().expect("the session has a display");
        assert_eq!((display.width, display.height), (w, h), "the display has the client's mode");
        assert!(s.sink.is_some(), "the session has a sink");
        let (picture, samples, _control) = watch(&launched.rtsp().unwrap(), launched.rikey, (w, h)).await;
        assert_picture(&picture, (w, h), colour_of(s.id));
        assert_tone(&samples);
        let h = health(&host, "/health").await;
        assert!(h.contains(&format!("\"{}\"", display.name())), "/health names the display: {h}");
        assert!(health(&host, "/metrics").await.contains("wolf_displays 1"));
        cancel(&host, &c).await;
        assert!(!display.socket().exists(), "the X socket went with the session");
    }
    assert_eq!(owned(&host, Role::Display), 0, "no X server left");
    assert_eq!(owned(&host, Role::App), 0, "no app left");
    assert!(sinks(&host).is_empty(), "no sink left: {:?}", sinks(&host));
    let m = health(&host, "/metrics").await;
    assert!(m.contains("wolf_displays 0") && m.contains("wolf_audio_sinks 0"), "{m}");
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sessions_of_one_app_get_two_displays_each_with_its_own_picture() {
    let (first, max) = (180, 4);
    let host = TestHost::start(config(first, max)).await;
    let (a, b) = (paired(&host).await, paired(&host).await);
    let la = a.launch(APP, "640x360x30").await.unwrap();
    let lb = b.launch(APP, "800x448x30").await.unwrap();
    let (sa, sb) = (session_of(&host, &a), session_of(&host, &b));
    assert_ne!(sa.display.as_ref().unwrap().number, sb.display.as_ref().unwrap().number);
    assert_ne!(colour_of(sa.id), colour_of(sb.id), "consecutive sessions paint different colours");
    let (ra, rb) = (la.rtsp().unwrap(), lb.rtsp().unwrap());
    let ((pa, _, _ca), (pb, _, _cb)) = tokio::join!(watch(&ra, la.rikey, (640, 360)), watch(&rb, lb.rikey, (800, 448)));
    assert_picture(&pa, (640, 360), colour_of(sa.id));
    assert_picture(&pb, (800, 448), colour_of(sb.id));
    cancel(&host, &a).await;
    cancel(&host, &b).await;
    assert!(x_sockets(first, max).is_empty());
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_launch_and_cancel_cycles_leave_no_display_sink_or_socket() {
    let (first, max) = (190, 2);
    let host = TestHost::start(config(first, max)).await;
    let c = paired(&host).await;
    for i in 0..200 {
        let launched = c.launch(APP, "320x240x30").await.unwrap();
        assert_eq!(launched.reply.field("gamesession").as_deref(), Some("1"), "cycle {i}: {}", launched.reply.text());
        cancel(&host, &c).await;
    }
    assert_eq!(owned(&host, Role::Display), 0, "no X server left");
    assert_eq!(owned(&host, Role::App), 0, "no app left");
    assert!(sinks(&host).is_empty(), "no sink left: {:?}", sinks(&host));
    assert!(x_sockets(first, max).is_empty(), "no X socket left");
    assert_eq!(host.running().host.planes.runners.displays.in_use(), 0);
    let process = host.running().host.planes.runners.process.clone();
    assert_eq!(process.owned().iter().filter(|p| p.role == Role::Audio).count(), 1, "one audio server for all");
    host.stop().await;
    assert!(process.owned().is_empty(), "a host stopped with no session leaves no process: {:?}", process.owned());
}

/// The launch's error: its status code and message.
async fn launch_error(c: &GameStreamClient) -> (u16, String) {
    let r = c.launch(APP, "320x240x30").await.unwrap();
    let code = wolf_protocol::xml::root_attr(&r.reply.text(), "status_code").and_then(|v| v.parse().ok()).unwrap_or(0);
    let message = wolf_protocol::xml::root_attr(&r.reply.text(), "status_message").unwrap_or_default();
    (code, message)
}

fn failures(host: &TestHost, reason: &str) -> u64 {
    host.running().host.metrics.session_creation_errors.with_label_values(&[reason]).get()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_display_that_cannot_start_fails_the_launch_clearly_and_leaves_nothing() {
    let (first, max) = (200, 1);
    let host = TestHost::start(config(first, max).with(|c| {
        c.apps[1].display.command = vec!["/nonexistent/Xvfb".into(), "{display}".into()];
    }))
    .await;
    let c = paired(&host).await;
    let (code, message) = launch_error(&c).await;
    assert_eq!(code, 500, "{message}");
    assert!(message.contains("virtual display") && message.contains("/nonexistent/Xvfb"), "{message}");
    assert_eq!(failures(&host, "display"), 1);
    assert!(host.running().host.sessions.is_empty());
    assert_eq!(owned(&host, Role::App) + owned(&host, Role::Display), 0);
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn display_numbers_run_out_with_a_clear_error() {
    let (first, max) = (210, 1);
    let host = TestHost::start(config(first, max)).await;
    let (a, b) = (paired(&host).await, paired(&host).await);
    let la = a.launch(APP, "320x240x30").await.unwrap();
    assert_eq!(la.reply.field("gamesession").as_deref(), Some("1"), "{}", la.reply.text());
    let (code, message) = launch_error(&b).await;
    assert_eq!(code, 500, "{message}");
    assert!(message.contains("no free display number"), "{message}");
    assert_eq!(failures(&host, "display"), 1);
    assert_eq!(host.running().host.sessions.len(), 1, "the first session runs on");
    cancel(&host, &a).await;
    // Its number is free again.
    let lb = b.launch(APP, "320x240x30").await.unwrap();
    assert_eq!(lb.reply.field("gamesession").as_deref(), Some("1"), "{}", lb.reply.text());
    cancel(&host, &b).await;
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_audio_server_that_cannot_start_fails_the_launch_and_stops_the_display() {
    let (first, max) = (220, 1);
    let host = TestHost::start(config(first, max).with(|c| c.desktop.pulseaudio = vec!["false".into()])).await;
    let c = paired(&host).await;
    let (code, message) = launch_error(&c).await;
    assert_eq!(code, 500, "{message}");
    assert!(message.contains("audio server did not start"), "{message}");
    assert_eq!(failures(&host, "audio"), 1);
    assert!(host.running().host.sessions.is_empty());
    assert_eq!(owned(&host, Role::Display), 0, "the display started first is stopped again");
    assert!(x_sockets(first, max).is_empty());
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_display_that_dies_ends_its_session_with_a_counted_reason() {
    let (first, max) = (230, 1);
    let host = TestHost::start(config(first, max)).await;
    let c = paired(&host).await;
    c.launch(APP, "320x240x30").await.unwrap();
    let display = session_of(&host, &c).display.unwrap();
    // SAFETY: kill(2) on the X server we started.
    unsafe { libc::kill(display.pid, libc::SIGKILL) };
    wait_no_sessions(&host).await;
    let ended = host.running().host.metrics.sessions_ended.with_label_values(&["display_lost"]).get();
    assert_eq!(ended, 1);
    assert_eq!(owned(&host, Role::App), 0, "the app went with its display");
    assert!(!display.socket().exists(), "the dead server's socket is cleaned up");
    host.stop().await;
}

/// A 1 kHz tone on all six channels into a 5.1 sink: each channel of the decoded 5.1 stream (in
/// the layout the client read from DESCRIBE) has its power at 1 kHz.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_five_one_tone_reaches_the_client_on_every_channel() {
    let (first, max) = (260, 1);
    let tone =
        "exec gst-launch-1.0 -q audiotestsrc freq=1000 volume=0.5 is-live=true ! audio/x-raw,channels=6 ! pulsesink";
    let host = TestHost::start(ConfigBuilder::loopback().pin(PIN).with(|c: &mut Config| {
        c.apps.push(desktop_app(5, "Tone", tone));
        c.desktop.first_display = first;
        c.desktop.max_displays = max;
    }))
    .await;
    let c = paired(&host).await;
    let rikey = [0x33; 16];
    // surroundAudioInfo: channel mask 0x3f << 16 | 6 channels.
    let q = c
        .launch_url(APP, "320x240x30", &hex::encode(rikey))
        .replace("surroundAudioInfo=196610", "surroundAudioInfo=4128774");
    let r = c.https_get(&q).await.unwrap();
    assert_eq!(r.field("gamesession").as_deref(), Some("1"), "{}", r.text());
    assert_eq!(session_of(&host, &c).sink.map(|s| s.channels), Some(6), "a 5.1 sink");
    let rtsp = wolf_client::RtspSession::from_url(&r.field("sessionUrl0").unwrap(), rikey).unwrap();
    let sdp = wolf_testkit::with_surround(&announce_sdp(320, 240, 30, 1000, SS_ENC_CONTROL_V2), 6, 0x3f);
    let played = rtsp_to_play(&rtsp, &sdp).await.unwrap();
    let layout = wolf_testkit::advertised_surround(&played.describe, 6);
    let _control = EnetClient::connect(played.control, played.connect_data, rikey);
    let audio = receive_audio(LOOPBACK, played.audio, &played.ping, 300, Duration::from_secs(60)).await.unwrap();
    let opus: Vec<Vec<u8>> =
        audio.iter().map(|(seq, d)| wolf_testkit::media::decrypt_audio_with(&rikey, d, *seq).unwrap()).collect();
    let caps = wolf_testkit::media::opus_surround_caps(&layout);
    let samples =
        tokio::task::spawn_blocking(move || wolf_testkit::media::opus_samples(&opus, &caps, 6)).await.unwrap().unwrap();
    let tail = &samples[samples.len() / 2..];
    for ch in 0..6 {
        let (at_1k, total) = tone_power(tail, 6, ch, 1000.0);
        assert!(total > 1e-3, "channel {ch} is not silent: {total}");
        assert!(at_1k > 0.5 * total, "channel {ch}: 1 kHz holds {at_1k} of {total}");
    }
    cancel(&host, &c).await;
    host.stop().await;
}

/// The default config's Desktop app (openbox, a maximized xterm) as a client sees it: a terminal,
/// light with dark text, over most of the screen. With `WOLF_RS_SNAPSHOT=file.png` the decoded
/// picture is saved there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_desktop_app_streams_a_terminal() {
    let (first, max) = (280, 1);
    let host = TestHost::start(ConfigBuilder::loopback().pin(PIN).with(|c: &mut Config| {
        c.apps.push(wolf_rs::config::App::desktop());
        c.desktop.first_display = first;
        c.desktop.max_displays = max;
    }))
    .await;
    let c = paired(&host).await;
    let launched = c.launch("2", "1280x720x30").await.unwrap();
    assert_eq!(launched.reply.field("gamesession").as_deref(), Some("1"), "{}", launched.reply.text());
    // The terminal maps its window within a second or two of the launch.
    let display = session_of(&host, &c).display.unwrap();
    until("xterm's window is up", || {
        std::process::Command::new("xdotool")
            .env("DISPLAY", display.name())
            .args(["search", "--onlyvisible", "--classname", "xterm"])
            .output()
            .is_ok_and(|o| o.status.success())
    })
    .await;
    let (picture, _, _control) = watch_with(&launched.rtsp().unwrap(), launched.rikey, (1280, 720), false).await;
    if let Ok(path) = std::env::var("WOLF_RS_SNAPSHOT") {
        picture.save_png(std::path::Path::new(&path)).unwrap();
    }
    assert_eq!((picture.width, picture.height), (1280, 720));
    let light = picture.share(|p| p.iter().all(|c| *c > 200));
    let dark = picture.share(|p| p.iter().all(|c| *c < 60));
    assert!(light > 0.5, "the terminal's background fills the screen: {light:.2} light");
    assert!(dark > 0.0005, "there is text (the prompt) and a title bar: {dark:.4} dark");
    cancel(&host, &c).await;
    host.stop().await;
}

/// `/resume` with another mode: a display that follows the client (`resize`) is set to the new mode
/// (RandR), the same desktop still on it; one that does not keeps its size and the stream is scaled.
/// Either way the client gets its own mode.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_with_another_mode_resizes_a_following_display_and_scales_the_others() {
    let (first, max) = (270, 2);
    let host = TestHost::start(config(first, max).with(|c: &mut Config| {
        let mut following = desktop_app(6, "Follow", PAINT_AND_PLAY);
        following.display.resize = true;
        following.display.max_width = 1920;
        following.display.max_height = 1080;
        c.apps.push(following);
    }))
    .await;
    let c = paired(&host).await;
    for (app, follows) in [("5", false), ("6", true)] {
        let launched = c.launch(app, "640x360x30").await.unwrap();
        assert_eq!(launched.reply.field("gamesession").as_deref(), Some("1"), "{}", launched.reply.text());
        let s = session_of(&host, &c);
        let before = s.display.clone().unwrap();
        assert_eq!((before.width, before.height), (640, 360), "app {app}: the display starts at the client's mode");
        let rikey = [0x44; 16];
        let q = c.url(
            "/resume",
            &[("rikey", &hex::encode(rikey)), ("rikeyid", "1"), ("corever", "1"), ("mode", "800x448x30")],
        );
        let r = c.https_get(&q).await.unwrap();
        assert_eq!(r.field("resume").as_deref(), Some("1"), "{}", r.text());
        let after = session_of(&host, &c).display.unwrap();
        let want = if follows { (800, 448) } else { (640, 360) };
        assert_eq!((after.width, after.height), want, "app {app}");
        assert_eq!((after.number, after.pid), (before.number, before.pid), "app {app}: the same X server");
        let rtsp = wolf_client::RtspSession::from_url(&r.field("sessionUrl0").unwrap(), rikey).unwrap();
        let (picture, _, _control) = watch_with(&rtsp, rikey, (800, 448), false).await;
        assert_picture(&picture, (800, 448), colour_of(s.id));
        cancel(&host, &c).await;
    }
    host.stop().await;
}

/// Paints red, says so in its HOME, then sleeps: the test paints over it, so a picture with the
/// test's colour can only come from the display that was there before the crash.
const PAINT_AND_SLEEP: &str =
    "xsetroot -solid '#ff0000' && pactl info > \"$HOME/pulse.txt\" && touch \"$HOME/painted\"; exec sleep 600";

fn records(state: &std::path::Path) -> Vec<wolf_rs::sessions::SessionRecord> {
    wolf_rs::sessions::store::load(&state.join(wolf_rs::sessions::store::FILE_NAME)).expect("the sessions file").records
}
/// Launch `app` (id 5), paint its display green from outside, kill -9 the host, start it again:
/// the same X server, sink and app are adopted, and a client that resumes sees green.
async fn adopted_after_kill_9(app: wolf_rs::config::App, first: u32) {
    use wolf_testkit::host_process::spawn;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let cfg = ConfigBuilder::loopback().pin(PIN).with(|c: &mut Config| {
        c.apps.push(app);
        c.desktop.first_display = first;
        c.desktop.max_displays = 2;
        c.sessions.stop_timeout_ms = 2000;
    });
    let mut host = spawn(&state, cfg.clone());
    host.health_until("healthy").await;
    let mut c = host.client();
    assert_eq!(c.pair(PIN).await.unwrap(), PairOutcome::Paired);
    let launched = c.launch(APP, "640x360x30").await.unwrap();
    assert_eq!(launched.reply.field("gamesession").as_deref(), Some("1"), "{}", launched.reply.text());
    let before = records(&state).pop().expect("the session is saved");
    let display = before.display.clone().expect("a display");
    let home = state.join("apps").join(c.identity.cert.fingerprint_hex()).join(APP);
    until("the app painted its display", || home.join("painted").exists()).await;
    let pulse = std::fs::read_to_string(home.join("pulse.txt")).unwrap();
    assert!(pulse.contains("Server Name"), "the app reached the session's audio server: {pulse}");
    let painted = std::process::Command::new("xsetroot")
        .env("DISPLAY", display.name())
        .args(["-solid", "#00ff00"])
        .status()
        .expect("xsetroot");
    assert!(painted.success());

    host.kill9();
    let host = spawn(&state, cfg.clone());
    host.health_until("healthy").await;
    let after = records(&state);
    assert_eq!(after.len(), 1, "adopted");
    assert_eq!(after[0].display, before.display, "the same X server");
    assert_eq!(after[0].sink, before.sink, "the same sink");
    assert_eq!(after[0].runner, before.runner, "the same app");
    let health = String::from_utf8_lossy(&host.get("/health").await.unwrap().body).into_owned();
    assert!(health.contains(&format!("\"{}\"", display.name())), "{health}");

    c.https = ([127, 0, 0, 1], host.https).into();
    let rikey = [0x5a; 16];
    let q = c.url("/resume", &[("rikey", &hex::encode(rikey)), ("rikeyid", "1"), ("corever", "1")]);
    let r = c.https_get(&q).await.unwrap();
    assert_eq!(r.field("resume").as_deref(), Some("1"), "{}", r.text());
    let rtsp = wolf_client::RtspSession::from_url(&r.field("sessionUrl0").unwrap(), rikey).unwrap();
    let (picture, _, _control) = watch_with(&rtsp, rikey, (640, 360), false).await;
    assert_picture(&picture, (640, 360), [0, 255, 0]);

    assert_eq!(c.https_get(&c.url("/cancel", &[])).await.unwrap().field("cancel").as_deref(), Some("1"));
    until("the session ends", || records(&state).is_empty()).await;
    until("its X server is gone", || !display.socket().exists()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_desktop_process_app_and_its_display_are_adopted_after_kill_9() {
    adopted_after_kill_9(desktop_app(5, "Paint", PAINT_AND_SLEEP), 240).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_desktop_docker_app_and_its_display_are_adopted_after_kill_9() {
    use wolf_testkit::docker::{DockerCleanup, build_image_with, remove_labelled};
    let dir = tempfile::tempdir().unwrap();
    let image = format!("wolf-rs-test-x11:{}", std::process::id());
    let _cleanup = DockerCleanup { containers: Vec::new(), images: vec![image.clone()] };
    remove_labelled();
    build_image_with(dir.path(), &image, &["xsetroot", "pactl"]);
    let mut app = desktop_app(5, "Paint", PAINT_AND_SLEEP);
    app.runner = wolf_testkit::config::docker_runner(&image);
    app.runner.command = ["sh", "-c", PAINT_AND_SLEEP].map(String::from).to_vec();
    adopted_after_kill_9(app, 250).await;
}
