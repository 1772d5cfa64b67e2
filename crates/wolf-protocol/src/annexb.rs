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

/// `data` without the NAL units whose H.264 type is in `drop` (each kept unit gets a 4-byte start
/// code). The client wants the IDR slice in the first packet: access unit delimiters and SEI
/// before it only push it out.
pub fn strip_h264(data: &[u8], drop: &[u8]) -> Vec<u8> {
    let at: Vec<usize> = h264_nal_types(data).into_iter().filter(|(_, t)| drop.contains(t)).map(|(at, _)| at).collect();
    strip_at(data, &at)
}

/// HEVC NAL unit type (2-byte header) of each unit: (offset of the header, type).
pub fn hevc_nal_types(data: &[u8]) -> Vec<(usize, u8)> {
    h264_nal_types(data).into_iter().map(|(at, _)| (at, (data[at] >> 1) & 0x3f)).collect()
}

/// HEVC access unit delimiter and prefix/suffix SEI.
pub const HEVC_AUD: u8 = 35;
pub const HEVC_SEI_PREFIX: u8 = 39;
pub const HEVC_SEI_SUFFIX: u8 = 40;

/// `data` without AUD and SEI units, for H.264 (`hevc = false`) or HEVC.
pub fn strip_aud_sei(data: &[u8], hevc: bool) -> Vec<u8> {
    if hevc {
        let drop: Vec<usize> = hevc_nal_types(data)
            .into_iter()
            .filter(|(_, t)| matches!(*t, HEVC_AUD | HEVC_SEI_PREFIX | HEVC_SEI_SUFFIX))
            .map(|(at, _)| at)
            .collect();
        strip_at(data, &drop)
    } else {
        strip_h264(data, &[NAL_AUD, NAL_SEI])
    }
}

/// `data` without the units whose header starts at one of `drop`.
fn strip_at(data: &[u8], drop: &[usize]) -> Vec<u8> {
    let units = h264_nal_types(data);
    let mut out = Vec::with_capacity(data.len());
    for (i, (start, _)) in units.iter().enumerate() {
        if drop.contains(start) {
            continue;
        }
        let mut end = units.get(i + 1).map_or(data.len(), |(next, _)| next - 3);
        while end > *start && units.get(i + 1).is_some() && data[end - 1] == 0 {
            end -= 1;
        }
        // Nothing but zeros up to the next start code: no unit at all (its "header" was a byte
        // of that start code), and a bare start code would leave an empty one behind.
        if end == *start {
            continue;
        }
        out.extend_from_slice(&[0, 0, 0, 1]);
        out.extend_from_slice(&data[*start..end]);
    }
    out
}

pub const NAL_AUD: u8 = 9;
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
        assert_eq!(h264_nal_types(&d).iter().map(|x| x.1).collect::<Vec<_>>(), vec![7, 8, 5]);
        assert!(h264_nal_types(&[0, 0, 1]).is_empty());
        assert!(h264_nal_types(&[]).is_empty());
    }

    #[test]
    fn strips_aud_and_sei_keeps_the_rest_intact() {
        let d = [
            0, 0, 0, 1, 0x09, 0xf0, 0, 0, 0, 1, 0x67, 9, 9, 0, 0, 1, 0x06, 5, 5, 0, 0, 1, 0x68, 7, 0, 0, 0, 1, 0x65, 1,
            0, 3,
        ];
        let s = strip_h264(&d, &[NAL_AUD, NAL_SEI]);
        assert_eq!(s, vec![0, 0, 0, 1, 0x67, 9, 9, 0, 0, 0, 1, 0x68, 7, 0, 0, 0, 1, 0x65, 1, 0, 3]);
        assert_eq!(strip_h264(&[1, 2, 3], &[NAL_SEI]), Vec::<u8>::new());
    }

    #[test]
    fn hevc_types_and_stripping() {
        // AUD (35), VPS (32), SEI prefix (39), IDR_W_RADL (19); 2-byte headers.
        let d =
            [0, 0, 0, 1, 35 << 1, 1, 0x50, 0, 0, 0, 1, 32 << 1, 1, 7, 0, 0, 1, 39 << 1, 1, 5, 0, 0, 1, 19 << 1, 1, 9];
        let types: Vec<u8> = hevc_nal_types(&d).iter().map(|x| x.1).collect();
        assert_eq!(types, vec![35, 32, 39, 19]);
        let s = strip_aud_sei(&d, true);
        assert_eq!(hevc_nal_types(&s).iter().map(|x| x.1).collect::<Vec<_>>(), vec![32, 19]);
    }
}
