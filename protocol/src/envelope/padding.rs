//! Size buckets: every envelope is padded to `padded_len` of its unpadded length, so its size
//! reveals only which bucket the message falls in (Padmé, Nikitin et al., PETS 2019).

/// The smallest bucket: every envelope is at least this long.
pub const MIN_ENVELOPE_SIZE: usize = 4096;

/// Padmé rounding with a 4096-byte floor: an `n` with `e = floor(log2 n)` keeps its top
/// `floor(log2 e) + 1` significant bits and is rounded up in the rest. The overhead is below
/// `2^-(floor(log2 e) + 1)`, i.e. under 6.25% from 4 KiB to 64 KiB, under 3.2% above; the
/// number of distinct sizes grows like `log2 log2 n`. Results never shrink: `padded_len(n) >= n`,
/// and a bucket size maps to itself. Saturates at `usize::MAX` (far beyond any envelope).
pub fn padded_len(n: usize) -> usize {
    if n <= MIN_ENVELOPE_SIZE {
        return MIN_ENVELOPE_SIZE;
    }
    let e = n.ilog2();
    let significant = e.ilog2() + 1;
    let mask = (1usize << (e - significant)) - 1;
    n.checked_add(mask).map_or(usize::MAX, |v| v & !mask)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padded_len_small_inputs_get_the_floor() {
        for n in [0, 1, 145, 4095, 4096] {
            assert_eq!(padded_len(n), 4096);
        }
    }

    #[test]
    fn padded_len_known_buckets() {
        // e = 12, 4 significant bits: steps of 256 bytes.
        assert_eq!(padded_len(4097), 4352);
        assert_eq!(padded_len(10_240), 10_240);
        assert_eq!(padded_len(10_241), 10_752);
        // e = 19 for 1 MB: 5 significant bits, steps of 16 KiB.
        assert_eq!(padded_len(1_000_000), 1_015_808);
        assert_eq!(padded_len(1 << 20), 1 << 20);
        // The limit is itself a bucket, so "unpadded <= max" means "padded <= max".
        assert_eq!(padded_len(64 << 20), 64 << 20);
        assert_eq!(padded_len(usize::MAX), usize::MAX);
    }

    #[test]
    fn padded_len_is_monotone_bounded_and_idempotent() {
        let mut prev = 0;
        let mut n = 1usize;
        while n < (200 << 20) {
            let p = padded_len(n);
            assert!(p >= n && p >= prev, "n = {n}");
            assert_eq!(padded_len(p), p, "n = {n}");
            if n > MIN_ENVELOPE_SIZE {
                assert!((p - n) * 100 <= n * 12, "overhead for n = {n}");
            }
            prev = p;
            n += 1 + n / 97;
        }
    }
}
