//! Gamepads for real, in a kernel with uinput: this machine's has none, so the test runs again
//! inside a QEMU guest (wolf_testkit::guest). There the host's input path (the same `Inputs` the
//! control thread feeds) makes a virtual pad when the client's controller arrives, turns state
//! packets into evdev events an app reads, tells the pad's device nodes (for apps in containers),
//! sends the app's force feedback back as rumble, and removes the pad when the controller leaves.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use evdev::{AbsoluteAxisCode, Device, EventSummary, FFEffectData, FFEffectKind, FFReplay, FFTrigger, KeyCode};
use wolf_protocol::input::{ControllerState, ControllerType, InputEvent, buttons, capabilities};
use wolf_rs::input::{Inputs, PadChange};

const PAD: &str = "Microsoft X-Box One pad (wolf-rs)";

/// The event device named `name`, once it is there (bounded).
fn find(name: &str) -> Option<PathBuf> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        for (path, dev) in evdev::enumerate() {
            if dev.name() == Some(name) {
                return Some(path);
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// Read `dev` until `want` holds for what was read (bounded by the guest's timeout).
fn read_until(dev: &mut Device, mut want: impl FnMut(&EventSummary) -> bool) {
    loop {
        for e in dev.fetch_events().expect("read the pad") {
            if want(&e.destructure()) {
                return;
            }
        }
    }
}

#[test]
fn a_client_controller_is_a_real_pad_and_its_rumble_comes_back() {
    if !wolf_testkit::guest::in_guest() {
        wolf_testkit::guest::run("a_client_controller_is_a_real_pad_and_its_rumble_comes_back");
        return;
    }
    assert!(wolf_rs::input::gamepads_state().is_ok(), "uinput in the guest: {:?}", wolf_rs::input::gamepads_state());
    let metrics = wolf_rs::metrics::Metrics::new().unwrap();
    let (rumble_tx, rumble) = mpsc::channel();
    let rumble_tx = std::sync::Mutex::new(rumble_tx);
    let (nodes_tx, pad_nodes) = mpsc::channel();
    let nodes_tx = std::sync::Mutex::new(nodes_tx);
    let hooks = wolf_rs::input::Hooks {
        rumble: Some(Arc::new(move |session, number, low, high| {
            let _ = rumble_tx.lock().unwrap().send((session, number, low, high));
        })),
        pad_nodes: Some(Arc::new(move |session, change| {
            let _ = nodes_tx.lock().unwrap().send((session, change));
        })),
    };
    let inputs = Inputs::new(metrics.clone(), hooks);
    // The session's injector is held in a slot, as its session process's control channel holds it.
    let slot = std::sync::Mutex::new(wolf_rs::input::Slot::default());
    let submit = |event| inputs.submit(1, &mut slot.lock().unwrap(), || None, event);

    // Arrival, as a Sunshine-style client sends it, then the pad's state.
    submit(InputEvent::ControllerArrival {
        number: 0,
        kind: ControllerType::Xbox,
        capabilities: capabilities::RUMBLE | capabilities::ANALOG_TRIGGERS,
        supported_buttons: 0xF7FF,
    });
    let node = find(PAD).expect("the virtual pad appears");
    // Its device nodes are told (an app in a container gets them made there): the event node, with
    // the number the kernel gave it.
    let (session, added) = pad_nodes.recv_timeout(Duration::from_secs(10)).expect("the pad's nodes are told");
    let PadChange::Added(first_nodes) = added else { panic!("{added:?}") };
    assert_eq!(session, 1);
    let rdev = std::os::unix::fs::MetadataExt::rdev(&std::fs::metadata(&node).unwrap());
    let event = first_nodes.iter().find(|n| n.path == node).unwrap_or_else(|| panic!("{node:?} in {first_nodes:?}"));
    assert_eq!((event.major, event.minor), (libc::major(rdev), libc::minor(rdev)));
    assert_eq!(event.major, wolf_rs::runners::docker::INPUT_MAJOR);
    let mut dev = Device::open(&node).unwrap();
    let keys = dev.supported_keys().unwrap();
    for k in [KeyCode::BTN_SOUTH, KeyCode::BTN_EAST, KeyCode::BTN_WEST, KeyCode::BTN_NORTH, KeyCode::BTN_START] {
        assert!(keys.contains(k), "{k:?}");
    }
    let axes = dev.supported_absolute_axes().unwrap();
    for a in [AbsoluteAxisCode::ABS_X, AbsoluteAxisCode::ABS_RY, AbsoluteAxisCode::ABS_Z, AbsoluteAxisCode::ABS_HAT0Y] {
        assert!(axes.contains(a), "{a:?}");
    }
    let state = ControllerState {
        number: 0,
        active_mask: 1,
        buttons: buttons::A | buttons::DPAD_LEFT,
        left_trigger: 200,
        left_stick: (1000, 2000),
        ..ControllerState::default()
    };
    submit(InputEvent::Controller(state));
    let (mut a, mut x, mut y, mut lt, mut hat) = (false, false, false, false, false);
    read_until(&mut dev, |e| {
        match e {
            EventSummary::Key(_, KeyCode::BTN_SOUTH, 1) => a = true,
            EventSummary::AbsoluteAxis(_, AbsoluteAxisCode::ABS_X, 1000) => x = true,
            EventSummary::AbsoluteAxis(_, AbsoluteAxisCode::ABS_Y, -2000) => y = true,
            EventSummary::AbsoluteAxis(_, AbsoluteAxisCode::ABS_Z, 200) => lt = true,
            EventSummary::AbsoluteAxis(_, AbsoluteAxisCode::ABS_HAT0X, -1) => hat = true,
            _ => {}
        }
        a && x && y && lt && hat
    });

    // The app rumbles the pad: the client is sent the motors, then 0/0 when it stops.
    let game = std::thread::spawn(move || {
        let mut pad = Device::open(&node).unwrap();
        let mut effect = pad
            .upload_ff_effect(FFEffectData {
                direction: 0,
                trigger: FFTrigger::default(),
                replay: FFReplay { length: 1000, delay: 0 },
                kind: FFEffectKind::Rumble { strong_magnitude: 0xC000, weak_magnitude: 0x4000 },
            })
            .unwrap();
        effect.play(1).unwrap();
        std::thread::sleep(Duration::from_millis(200));
        effect.stop().unwrap();
    });
    let first = rumble.recv_timeout(Duration::from_secs(20)).expect("rumble reaches the client");
    assert_eq!(first, (1, 0, 0xC000, 0x4000));
    let second = rumble.recv_timeout(Duration::from_secs(20)).expect("the stop reaches the client");
    assert_eq!(second, (1, 0, 0, 0));
    game.join().unwrap();

    // A second controller the client calls PlayStation is a pad of that kind, beside the first.
    submit(InputEvent::ControllerArrival {
        number: 1,
        kind: ControllerType::PlayStation,
        capabilities: capabilities::RUMBLE,
        supported_buttons: 0xF7FF,
    });
    let ps = find("Sony Interactive Entertainment Wireless Controller (wolf-rs)").expect("a PlayStation pad");
    let ps = Device::open(&ps).unwrap();
    assert_eq!((ps.input_id().vendor(), ps.input_id().product()), (0x054c, 0x0ce6));
    assert!(ps.supported_keys().unwrap().contains(KeyCode::BTN_SOUTH));
    assert!(find(PAD).is_some(), "the first pad is still there");

    // The controller leaves: the pad goes.
    submit(InputEvent::Controller(ControllerState { number: 0, active_mask: 0, ..state }));
    let deadline = Instant::now() + Duration::from_secs(10);
    while evdev::enumerate().any(|(_, d)| d.name() == Some(PAD)) {
        assert!(Instant::now() < deadline, "the pad is removed when the controller leaves");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(metrics.input_events.with_label_values(&["controller"]).get(), 2);
    let changes: Vec<(u32, PadChange)> = pad_nodes.try_iter().collect();
    assert!(
        matches!(&changes[..], [(1, PadChange::Added(_)), (1, PadChange::Removed(gone))] if *gone == first_nodes),
        "{changes:?}"
    );
    // The client leaves (or the session ends): its remaining pad's nodes go too.
    slot.lock().unwrap().close();
    let (_, last) = pad_nodes.recv_timeout(Duration::from_secs(10)).expect("the last pad's nodes go");
    assert!(matches!(last, PadChange::Removed(n) if n.iter().any(|n| n.path.to_string_lossy().contains("event"))));
}
