//! Annex B bitstreams: find NAL units (the client needs SPS/PPS and the IDR slice up front).

/// (offset of the NAL header byte, H.264 nal_unit_type) for each NAL unit in `data`.
pub fn h264_nal_types(data: &[u8]) -> Vec<(usize, u8)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i + 3 <= data.len() {
        if data[i] == 0 && data[i + 1] == 0 && data[i + 2] == 1 {
            if let Some(h) = data.get(i + 3) {
                out.push((i + 3, h & 0x1f));
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    out
}

pub const NAL_IDR: u8 = 5;
pub const NAL_SEI: u8 = 6;
pub const NAL_SPS: u8 = 7;
pub const NAL_PPS: u8 = 8;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_three_and_four_byte_start_codes() {
        let d = [0, 0, 0, 1, 0x67, 9, 9, 0, 0, 1, 0x68, 7, 0, 0, 0, 1, 0x65, 1, 2, 3];
        assert_eq!(
            h264_nal_types(&d).iter().map(|x| x.1).collect::<Vec<_>>(),
            vec![7, 8, 5]
        );
        assert!(h264_nal_types(&[0, 0, 1]).is_empty());
        assert!(h264_nal_types(&[]).is_empty());
    }
}
