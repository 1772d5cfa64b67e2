//! The real GStreamer pipeline: encoder probe, a test-pattern stream, forced keyframes, clean stop.

use std::time::Duration;

use wolf_protocol::annexb::{NAL_IDR, NAL_PPS, NAL_SPS, h264_nal_types};
use wolf_rs::media::pipeline::{EncodedFrame, EncoderPipeline, Ended};
use wolf_rs::media::{self, MediaError, VideoSpec};

fn spec() -> VideoSpec {
    VideoSpec {
        source: "videotestsrc pattern=ball is-live=true".into(),
        width: 1280,
        height: 720,
        fps: 60,
        bitrate_kbps: 5000,
        slices: 1,
    }
}

fn next(p: &mut EncoderPipeline) -> EncodedFrame {
    // Bounded: a stalled pipeline fails the test instead of hanging it.
    for _ in 0..1000 {
        match p.frames.try_recv() {
            Ok(f) => return f,
            Err(std::sync::mpsc::TryRecvError::Empty) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => panic!("frames channel closed: {e}"),
        }
    }
    panic!("no frame within 10 s");
}

#[test]
fn probe_picks_an_h264_encoder_and_says_why() {
    let choice = media::probe("auto", false).expect("an H.264 encoder");
    assert!(choice.reason.starts_with(&format!("H.264 with {}", choice.h264.name)), "{}", choice.reason);
    eprintln!("encoder: {}", choice.reason);
    // Forcing one that cannot be created here is a clear error, not a silent fallback.
    if gstreamer::ElementFactory::make("nvh264enc").build().is_err() {
        assert_eq!(media::probe("nvcodec", false), Err(MediaError::ForcedUnavailable("nvcodec".into())));
    }
    assert!(media::probe("no-such-encoder", false).is_err());
}

#[test]
fn test_pattern_streams_idr_first_and_keyframes_on_request() {
    let choice = media::probe("auto", false).expect("encoder");
    let text = media::render(&media::template(&choice.h264, None).unwrap(), &spec()).unwrap();
    let mut p = EncoderPipeline::start(text, Default::default()).expect("pipeline starts");
    let first = next(&mut p);
    assert!(first.keyframe, "the first frame is a keyframe");
    let types: Vec<u8> = h264_nal_types(&first.data).iter().map(|x| x.1).collect();
    let pos = |t: u8| types.iter().position(|x| *x == t).unwrap_or_else(|| panic!("NAL {t} missing in {types:?}"));
    assert!(pos(NAL_SPS) < pos(NAL_PPS) && pos(NAL_PPS) < pos(NAL_IDR), "SPS, PPS, then the IDR slice: {types:?}");
    // Let the encoder settle into P-frames, then ask for a keyframe and see one follow.
    for _ in 0..20 {
        next(&mut p);
    }
    let before = (0..10).filter(|_| next(&mut p).keyframe).count();
    assert_eq!(before, 0, "no keyframes unless asked");
    p.force_keyframe();
    let mut seen = false;
    for _ in 0..60 {
        let f = next(&mut p);
        if f.keyframe {
            assert!(h264_nal_types(&f.data).iter().any(|x| x.1 == NAL_SPS), "a forced IDR carries SPS/PPS");
            seen = true;
            break;
        }
    }
    assert!(seen, "a keyframe followed the request");
    assert!(p.stats.frames.load(std::sync::atomic::Ordering::Relaxed) >= 32);
    assert_eq!(p.stop(), Ended::Stopped);
}

#[test]
fn a_pipeline_that_ends_reports_it_and_bad_text_is_an_error() {
    let p = EncoderPipeline::start(
        "videotestsrc num-buffers=3 ! video/x-raw,width=64,height=64 ! appsink name=sink".into(),
        Default::default(),
    )
    .expect("starts");
    for _ in 0..1000 {
        if p.has_ended() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(p.has_ended(), "the thread ends by itself at EOS");
    assert_eq!(p.stats.frames.load(std::sync::atomic::Ordering::Relaxed), 3);
    assert_eq!(p.stop(), Ended::Eos);
    assert!(matches!(
        EncoderPipeline::start("this is ! not a pipeline (".into(), Default::default()),
        Err(MediaError::Pipeline(_))
    ));
    assert!(matches!(
        EncoderPipeline::start("videotestsrc ! fakesink".into(), Default::default()),
        Err(MediaError::Pipeline(_))
    ));
}
