//! The real GStreamer pipeline: encoder probe, a test-pattern stream, forced keyframes, clean stop,
//! and frames dropped under backpressure: raw ones counted, encoded ones counted and followed by an IDR.

use std::sync::atomic::Ordering;
use std::time::Duration;

use wolf_protocol::annexb::{NAL_IDR, NAL_PPS, NAL_SPS, h264_nal_types};
use wolf_rs::media::pipeline::{EncodedFrame, EncoderPipeline, Ended, Handoff, NextFrame, Reporting};
use wolf_rs::media::{self, MediaError, VideoSpec};
use wolf_rs::metrics::{DROP_ENCODER_QUEUE, DROP_HANDOFF, DROP_SENDER, Metrics};

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
    for _ in 0..100 {
        match p.next_frame(Duration::from_millis(100)) {
            NextFrame::Frame(f) => return f,
            NextFrame::Idle => {}
            NextFrame::Ended => panic!("the pipeline ended"),
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
        let forced = media::probe("nvcodec", false);
        assert!(matches!(&forced, Err(MediaError::ForcedUnavailable(n)) if n == "nvcodec"), "{forced:?}");
    }
    assert!(media::probe("no-such-encoder", false).is_err());
}

#[test]
fn test_pattern_streams_idr_first_and_keyframes_on_request() {
    let choice = media::probe("auto", false).expect("encoder");
    let text = media::render(&media::template(&choice.h264, None).unwrap(), &spec()).unwrap();
    let mut p = EncoderPipeline::start(text, Handoff::VIDEO, Default::default()).expect("pipeline starts");
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
        Handoff::VIDEO,
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
        EncoderPipeline::start("this is ! not a pipeline (".into(), Handoff::VIDEO, Default::default()),
        Err(MediaError::Parse(_))
    ));
    assert!(matches!(
        EncoderPipeline::start("videotestsrc ! fakesink".into(), Handoff::VIDEO, Default::default()),
        Err(MediaError::NoAppsink)
    ));
}

/// H.264 bits after emulation prevention is removed, read MSB first.
struct Bits {
    data: Vec<u8>,
    at: usize,
}

impl Bits {
    fn new(nal: &[u8]) -> Bits {
        let mut data = Vec::with_capacity(nal.len());
        for &b in nal {
            if b == 3 && data.ends_with(&[0, 0]) {
                continue;
            }
            data.push(b);
        }
        Bits { data, at: 0 }
    }

    fn bit(&mut self) -> u32 {
        let b = self.data.get(self.at / 8).map_or(0, |b| (b >> (7 - self.at % 8)) & 1);
        self.at += 1;
        u32::from(b)
    }

    fn bits(&mut self, n: u32) -> u32 {
        (0..n).fold(0, |v, _| (v << 1) | self.bit())
    }

    fn ue(&mut self) -> u32 {
        let mut zeros = 0;
        while self.bit() == 0 && zeros < 32 {
            zeros += 1;
        }
        ((1u64 << zeros) - 1 + u64::from(self.bits(zeros))) as u32
    }

    fn se(&mut self) -> i32 {
        let k = self.ue() as i32;
        if k % 2 == 1 { (k + 1) / 2 } else { -(k / 2) }
    }
}

/// What a slice's `frame_num` needs from the SPS: (log2_max_frame_num, separate_colour_plane).
fn sps_frame_num_bits(sps: &[u8]) -> (u32, bool) {
    let mut b = Bits::new(sps);
    let profile = b.bits(8);
    b.bits(16); // constraint flags, level
    b.ue(); // seq_parameter_set_id
    let mut separate = false;
    if [100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135].contains(&profile) {
        let chroma = b.ue();
        if chroma == 3 {
            separate = b.bit() == 1;
        }
        b.ue(); // bit_depth_luma_minus8
        b.ue(); // bit_depth_chroma_minus8
        b.bit(); // qpprime_y_zero_transform_bypass_flag
        if b.bit() == 1 {
            for i in 0..if chroma == 3 { 12 } else { 8 } {
                if b.bit() == 1 {
                    let (mut last, mut next) = (8i32, 8i32);
                    for _ in 0..if i < 6 { 16 } else { 64 } {
                        if next != 0 {
                            next = (last + b.se() + 256) % 256;
                        }
                        last = if next == 0 { last } else { next };
                    }
                }
            }
        }
    }
    (b.ue() + 4, separate)
}

/// One delivered frame as the client's decoder sees it: IDR or not, and the first slice's frame_num.
#[derive(Debug, Clone, Copy)]
struct Picture {
    idr: bool,
    frame_num: u32,
    reference: bool,
}

/// Follows the SPS of the stream and reads each access unit's frame_num.
#[derive(Default)]
struct FrameNums {
    sps: Option<(u32, bool)>,
}

impl FrameNums {
    fn picture(&mut self, au: &[u8]) -> Picture {
        let nals = h264_nal_types(au);
        for (i, (at, t)) in nals.iter().enumerate() {
            let end = nals.get(i + 1).map_or(au.len(), |n| n.0);
            let nal = &au[*at..end];
            match *t {
                NAL_SPS => self.sps = Some(sps_frame_num_bits(&nal[1..])),
                1 | 5 => {
                    let (log2_max, separate) = self.sps.expect("an SPS before the first slice");
                    let mut b = Bits::new(&nal[1..]);
                    b.ue(); // first_mb_in_slice
                    b.ue(); // slice_type
                    b.ue(); // pic_parameter_set_id
                    if separate {
                        b.bits(2);
                    }
                    return Picture { idr: *t == 5, frame_num: b.bits(log2_max), reference: nal[0] & 0x60 != 0 };
                }
                _ => {}
            }
        }
        panic!("no slice in the access unit");
    }
}

/// What a decoder would reject: a non-IDR picture whose frame_num skips one (a frame lost before it).
fn frame_num_gaps(pictures: &[Picture], log2_max: u32) -> Vec<usize> {
    let max = 1u32 << log2_max;
    let mut prev_ref: Option<u32> = None;
    let mut gaps = Vec::new();
    for (i, p) in pictures.iter().enumerate() {
        if !p.idr
            && let Some(r) = prev_ref
            && p.frame_num != r
            && p.frame_num != (r + 1) % max
        {
            gaps.push(i);
        }
        if p.reference {
            prev_ref = Some(p.frame_num);
        }
    }
    gaps
}

/// A small, quick stream of the test pattern from the H.264 encoder picked here.
fn small_stream() -> String {
    let choice = media::probe("auto", false).expect("encoder");
    let spec = VideoSpec { width: 320, height: 240, fps: 30, ..spec() };
    media::render(&media::template(&choice.h264, None).unwrap(), &spec).unwrap()
}

fn reporting(metrics: &Metrics) -> Reporting {
    Reporting { video_drops: Some(metrics.video_frames_dropped.clone()), ..Default::default() }
}

fn dropped(metrics: &Metrics, at: &str) -> u64 {
    metrics.video_frames_dropped.with_label_values(&[at]).get()
}

fn pictures(frames: &[EncodedFrame], nums: &mut FrameNums) -> Vec<Picture> {
    frames
        .iter()
        .map(|f| {
            let p = nums.picture(&f.data);
            assert_eq!(p.idr, f.keyframe, "the keyframe flag matches the slice type");
            p
        })
        .collect()
}

#[test]
fn a_stalled_sender_costs_encoded_frames_counted_and_the_next_frame_after_the_loss_is_an_idr() {
    let metrics = Metrics::new().unwrap();
    let mut p = EncoderPipeline::start(small_stream(), Handoff::VIDEO, reporting(&metrics)).expect("starts");
    let mut nums = FrameNums::default();
    let before: Vec<EncodedFrame> = (0..10).map(|_| next(&mut p)).collect();
    let mut seen = pictures(&before, &mut nums);
    assert_eq!(dropped(&metrics, DROP_HANDOFF), 0, "a sender that keeps up loses nothing");
    // The sender stops taking frames (stalled on purpose) until the hand-off gives up on one.
    for _ in 0..200 {
        if dropped(&metrics, DROP_HANDOFF) > 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(dropped(&metrics, DROP_HANDOFF) > 0, "a stalled sender cost encoded frames, and they were counted");
    // The sender resumes: what was queued before the loss, then an IDR, never a P-frame past the gap.
    let after: Vec<EncodedFrame> = (0..40).map(|_| next(&mut p)).collect();
    let resumed = pictures(&after, &mut nums);
    seen.extend(&resumed);
    let log2_max = nums.sps.unwrap().0;
    assert_eq!(frame_num_gaps(&seen, log2_max), Vec::<usize>::new(), "no frame_num gap reaches the client");
    let first_idr = resumed.iter().position(|x| x.idr).expect("an IDR followed the loss");
    assert!(first_idr <= 8, "at most the queued frames come before the IDR: {first_idr}");
    assert!(h264_nal_types(&after[first_idr].data).iter().any(|x| x.1 == NAL_SPS), "the IDR carries SPS/PPS");
    assert!(p.stats.dropped.load(Ordering::Relaxed) >= dropped(&metrics, DROP_HANDOFF));
    assert_eq!(dropped(&metrics, DROP_SENDER), 0);
    assert_eq!(p.stop(), Ended::Stopped);
}

#[test]
fn a_frame_the_sender_loses_is_counted_and_only_an_idr_comes_next() {
    let metrics = Metrics::new().unwrap();
    let mut p = EncoderPipeline::start(small_stream(), Handoff::VIDEO, reporting(&metrics)).expect("starts");
    let mut nums = FrameNums::default();
    let mut frames: Vec<EncodedFrame> = (0..15).map(|_| next(&mut p)).collect();
    // Let P-frames queue up behind the one that is lost.
    std::thread::sleep(Duration::from_millis(200));
    frames.pop();
    p.frame_lost();
    let after = next(&mut p);
    assert!(after.keyframe, "the first frame after a lost one is an IDR");
    frames.push(after);
    frames.extend((0..10).map(|_| next(&mut p)));
    let seen = pictures(&frames, &mut nums);
    assert_eq!(frame_num_gaps(&seen, nums.sps.unwrap().0), Vec::<usize>::new());
    assert!(dropped(&metrics, DROP_SENDER) >= 1, "the lost frame (and those discarded after it) counted");
    assert_eq!(p.stop(), Ended::Stopped);
}

#[test]
fn a_slow_encoder_drops_raw_frames_before_it_counted_and_never_an_encoded_one() {
    let metrics = Metrics::new().unwrap();
    // The encoder's output stalls on purpose (40 ms a frame at 60 fps): backpressure reaches the raw queue.
    let text = small_stream().replace("framerate=30/1", "framerate=60/1");
    let parse = text.find(" ! h264parse").expect("h264parse in the template");
    let text = format!("{} ! identity sleep-time=40000{}", &text[..parse], &text[parse..]);
    let mut p = EncoderPipeline::start(text, Handoff::VIDEO, reporting(&metrics)).expect("starts");
    let mut nums = FrameNums::default();
    let mut frames = Vec::new();
    for _ in 0..300 {
        frames.push(next(&mut p));
        if frames.len() >= 30 && dropped(&metrics, DROP_ENCODER_QUEUE) > 0 {
            break;
        }
    }
    assert!(dropped(&metrics, DROP_ENCODER_QUEUE) > 0, "raw frames were dropped before the encoder, counted");
    assert!(p.stats.raw_dropped.load(Ordering::Relaxed) > 0);
    assert_eq!(dropped(&metrics, DROP_HANDOFF), 0, "no encoded frame lost");
    let seen = pictures(&frames, &mut nums);
    assert_eq!(seen.iter().filter(|x| x.idr).count(), 1, "only the first frame is an IDR: nothing to repair");
    assert_eq!(frame_num_gaps(&seen, nums.sps.unwrap().0), Vec::<usize>::new());
    assert_eq!(p.stop(), Ended::Stopped);
}

#[test]
fn a_user_template_whose_appsink_drops_still_streams_and_audio_never_holds_up_its_encoder() {
    // An old template ending in drop=true, without a leaky queue: it still works (the drop is overridden).
    let text = small_stream()
        .replace("queue name=rawqueue leaky=downstream max-size-buffers=2 max-size-bytes=0 max-size-time=0 ! ", "")
        .replace("drop=false", "drop=true");
    let mut p = EncoderPipeline::start(text, Handoff::VIDEO, Default::default()).expect("starts");
    assert!(next(&mut p).keyframe);
    assert_eq!(p.stop(), Ended::Stopped);
    // Audio: nobody takes the packets, and the pipeline still stops at once.
    let audio = "audiotestsrc is-live=true ! audioconvert ! opusenc ! appsink name=sink".into();
    let p = EncoderPipeline::start(audio, Handoff::DropNewest, Default::default()).expect("starts");
    for _ in 0..500 {
        if p.stats.dropped.load(Ordering::Relaxed) > 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(p.stats.dropped.load(Ordering::Relaxed) > 0, "a full hand-off drops audio packets");
    assert_eq!(p.stop(), Ended::Stopped);
}
