//! The client's side of video encryption: the ANNOUNCE SDP Moonlight sends, with the SS_ENC_* bits
//! it enables, and opening each received datagram before depacketizing when it enabled
//! SS_ENC_VIDEO.

use std::borrow::Cow;

use wolf_protocol::gcm::StreamKey;
use wolf_protocol::video::{ENC_HEADER_LEN, decrypt_packet};

use crate::error::{ErrorKind, Result, ResultExt};

pub use wolf_protocol::rtsp::{SS_ENC_AUDIO, SS_ENC_CONTROL_V2, SS_ENC_VIDEO};

/// The video packet size Moonlight asks for on a local network, before encryption's share.
pub const PACKET_SIZE: usize = 1024;

/// What Moonlight announces: the mode, [`PACKET_SIZE`] (less the encryption header when it enables
/// SS_ENC_VIDEO, as moonlight-common-c's SdpGenerator does), H.264, at least 2 FEC packets,
/// encrypted audio (featureFlags 0x20), 5 ms audio packets, and `encryption` as
/// `x-ss-general.encryptionEnabled`.
pub fn announce_sdp(width: u32, height: u32, fps: u32, kbps: u32, encryption: u32) -> String {
    let packet_size = if encryption & SS_ENC_VIDEO != 0 { PACKET_SIZE - ENC_HEADER_LEN } else { PACKET_SIZE };
    format!(
        "v=0\r\no=android 0 14 IN IPv4 127.0.0.1\r\ns=NVIDIA Streaming Client\r\n\
         a=x-nv-video[0].clientViewportWd:{width} \r\na=x-nv-video[0].clientViewportHt:{height} \r\n\
         a=x-nv-video[0].maxFPS:{fps} \r\na=x-nv-video[0].packetSize:{packet_size} \r\na=x-nv-vqos[0].bitStreamFormat:0 \r\n\
         a=x-ml-video.configuredBitrateKbps:{kbps} \r\na=x-nv-vqos[0].fec.minRequiredFecPackets:2 \r\n\
         a=x-nv-general.featureFlags:167 \r\na=x-ss-general.encryptionEnabled:{encryption} \r\na=x-nv-aqos.packetDuration:5 \r\n\
         t=0 0\r\nm=video 47998  \r\n"
    )
}

/// Turns received video datagrams into plain packets: as they came, or opened with the launch's
/// rikey when the ANNOUNCE enabled SS_ENC_VIDEO.
#[derive(Debug)]
pub struct VideoOpener {
    key: Option<StreamKey>,
}

impl VideoOpener {
    /// For a stream whose ANNOUNCE enabled `encryption` (SS_ENC_* bits), launched with `rikey`.
    pub fn new(encryption: u32, rikey: &[u8; 16]) -> Result<VideoOpener> {
        let key = (encryption & SS_ENC_VIDEO != 0)
            .then(|| StreamKey::new(rikey))
            .transpose()
            .or_err(ErrorKind::Protocol, || "video key")?;
        Ok(VideoOpener { key })
    }

    pub fn encrypted(&self) -> bool {
        self.key.is_some()
    }

    /// The plain packet, ready for `wolf_protocol::video::parse_packet`; an error if a sealed
    /// stream's datagram does not open (forged, damaged, or another key's).
    pub fn open<'a>(&self, datagram: &'a [u8]) -> Result<Cow<'a, [u8]>> {
        match &self.key {
            None => Ok(Cow::Borrowed(datagram)),
            Some(k) => {
                decrypt_packet(k, datagram).map(Cow::Owned).or_err(ErrorKind::Protocol, || "sealed video packet")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wolf_protocol::rtsp::parse_announce;
    use wolf_protocol::video::{FrameType, Packetizer, VideoParams, VideoSealer, parse_packet};

    #[test]
    fn the_announce_carries_the_bits_and_gives_up_the_header_room() {
        let plain = parse_announce(&announce_sdp(1280, 720, 60, 8000, SS_ENC_CONTROL_V2)).unwrap();
        assert_eq!((plain.encryption, plain.packet_size), (SS_ENC_CONTROL_V2, 1024));
        let sealed = parse_announce(&announce_sdp(1280, 720, 60, 8000, SS_ENC_CONTROL_V2 | SS_ENC_VIDEO)).unwrap();
        assert_eq!((sealed.encryption, sealed.packet_size), (SS_ENC_CONTROL_V2 | SS_ENC_VIDEO, 992));
    }

    #[test]
    fn a_sealed_stream_is_opened_and_a_plain_one_passes_through() {
        let key = [5u8; 16];
        let mut p = Packetizer::new(VideoParams { packet_size: 992, fec_percent: 20, min_parity: 2 }).unwrap();
        let packet = p.packetize(&[1, 2, 3], FrameType::Idr, 0, 0).unwrap().remove(0);
        let sealed = VideoSealer::new(&key).unwrap().seal(&packet).unwrap();

        let opener = VideoOpener::new(SS_ENC_CONTROL_V2 | SS_ENC_VIDEO, &key).unwrap();
        assert!(opener.encrypted());
        assert_eq!(parse_packet(&opener.open(&sealed).unwrap()).unwrap().frame_index, 1);
        assert!(opener.open(&packet).is_err(), "a plain packet is not accepted on a sealed stream");
        assert!(VideoOpener::new(SS_ENC_VIDEO, &[6; 16]).unwrap().open(&sealed).is_err(), "another key");

        let plain = VideoOpener::new(SS_ENC_CONTROL_V2, &key).unwrap();
        assert!(!plain.encrypted());
        assert_eq!(&*plain.open(&packet).unwrap(), &packet[..]);
    }
}
