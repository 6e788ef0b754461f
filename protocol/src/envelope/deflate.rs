//! DEFLATE of a message straight into the envelope's buffer, bounded: compression stops as soon
//! as the output would pass a limit, so a message that does not compress costs no buffer bigger
//! than the limit, and one that does needs no buffer beside the envelope.

use miniz_oxide::deflate::core::{
    CompressorOxide, TDEFLFlush, TDEFLStatus, compress, create_comp_flags_from_zip_params,
};

/// The least room `compress` is given per call (miniz_oxide's own `compress_to_vec` grows its
/// buffer below this much room).
const MIN_ROOM: usize = 30;

/// Appends `input` compressed (raw DEFLATE at `level`, as `compress_to_vec`) to `out` and returns
/// its length, or leaves `out` as it was and returns `None` when it would be longer than `limit`.
pub fn append(out: &mut Vec<u8>, mut input: &[u8], level: u8, limit: usize) -> Option<usize> {
    let start = out.len();
    let mut compressor =
        CompressorOxide::new(create_comp_flags_from_zip_params(level.into(), 0, 0));
    // Grown by doubling up to the limit: a message that compresses well touches little memory.
    let mut room = (input.len() / 4).clamp(MIN_ROOM.min(limit), limit);
    out.resize(start + room, 0);
    let mut written = 0;
    loop {
        let (status, used, wrote) = compress(
            &mut compressor,
            input,
            &mut out[start + written..start + room],
            TDEFLFlush::Finish,
        );
        written += wrote;
        input = &input[used.min(input.len())..];
        match status {
            TDEFLStatus::Done => {
                out.truncate(start + written);
                return Some(written);
            }
            TDEFLStatus::Okay if room - written < MIN_ROOM => {
                if room == limit {
                    break;
                }
                room = room.saturating_mul(2).min(limit);
                out.resize(start + room, 0);
            }
            TDEFLStatus::Okay if wrote > 0 || used > 0 => {}
            // No progress with room left, or a compressor error: treat as incompressible.
            _ => break,
        }
    }
    out.truncate(start);
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(len: usize) -> Vec<u8> {
        b"the quick brown fox jumps over the lazy dog\r\n"
            .iter()
            .copied()
            .cycle()
            .take(len)
            .collect()
    }

    #[test]
    fn append_matches_compress_to_vec_after_a_prefix() {
        for (len, level) in [(0, 6), (100, 6), (70_000, 1), (1_000_000, 1)] {
            let input = text(len);
            let mut out = b"prefix".to_vec();
            let n = append(&mut out, &input, level, usize::MAX / 4).unwrap();
            let want = miniz_oxide::deflate::compress_to_vec(&input, level);
            assert_eq!((n, &out[6..]), (want.len(), &want[..]), "len {len}");
            assert_eq!(&out[..6], b"prefix");
        }
    }

    #[test]
    fn append_gives_up_past_the_limit_and_leaves_out_unchanged() {
        let mut state = 1u32;
        let noise: Vec<u8> = (0..200_000)
            .map(|_| {
                state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                (state >> 16) as u8
            })
            .collect();
        let mut out = b"prefix".to_vec();
        assert_eq!(append(&mut out, &noise, 1, noise.len() - 5), None);
        assert_eq!(out, b"prefix");
        let want = miniz_oxide::deflate::compress_to_vec(&text(5000), 6).len();
        assert_eq!(append(&mut out, &text(5000), 6, want), Some(want));
        assert_eq!(append(&mut out, &text(5000), 6, want - 1), None);
    }
}
