//! Payload masking (RFC 6455 §5.3).
//!
//! Masking XORs the payload with a 4-byte key repeated; the same call masks and unmasks.
//! The fast path works on 8-byte words in blocks of 32 bytes, which the compiler turns into
//! SIMD on the targets that have it; `mask_naive` is the reference it is tested against.

/// XOR `buf` with `key`, as if `buf` started `offset` bytes into the payload.
///
/// `offset` lets a payload that arrives in pieces be unmasked piece by piece.
#[inline(always)]
pub fn apply_mask(buf: &mut [u8], key: [u8; 4], offset: usize) {
    let key = rotate(key, offset);
    let (blocks, rest) = buf.as_chunks_mut::<32>();
    if !blocks.is_empty() {
        xor_blocks(blocks, key);
    }
    // 32, 8 and 4 are multiples of 4, so the key phase is unchanged for what remains: at most
    // three 8-byte lanes, one 4-byte word and three bytes.
    // The key twice, from one 32-bit value (built byte by byte it costs a dozen instructions);
    // the two halves are equal, so the byte order is the same on every target.
    let half = u64::from(u32::from_ne_bytes(key));
    let word = half | (half << 32);
    let (lanes, rest) = rest.as_chunks_mut::<8>();
    for lane in lanes {
        *lane = (u64::from_ne_bytes(*lane) ^ word).to_ne_bytes();
    }
    let (words, rest) = rest.as_chunks_mut::<4>();
    if let Some(w) = words.first_mut() {
        *w = (u32::from_ne_bytes(*w) ^ u32::from_ne_bytes(key)).to_ne_bytes();
    }
    for (b, k) in rest.iter_mut().zip(key) {
        *b ^= k;
    }
}

/// XOR whole 32-byte blocks with the key repeated. With AVX2 (detected at run time on
/// x86-64) a block is one instruction; otherwise the compiler's baseline SIMD (two SSE2
/// instructions on x86-64).
fn xor_blocks(blocks: &mut [[u8; 32]], key: [u8; 4]) {
    let pattern: [u8; 32] = std::array::from_fn(|i| key[i & 3]);
    #[cfg(target_arch = "x86_64")]
    if blocks.len() >= 2 && std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2, checked just above; the function has no other
        // requirement.
        unsafe { xor_blocks_avx2(blocks, &pattern) };
        return;
    }
    xor_blocks_portable(blocks, &pattern);
}

#[inline(always)]
fn xor_blocks_portable(blocks: &mut [[u8; 32]], pattern: &[u8; 32]) {
    for block in blocks {
        for (b, k) in block.iter_mut().zip(pattern) {
            *b ^= k;
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn xor_blocks_avx2(blocks: &mut [[u8; 32]], pattern: &[u8; 32]) {
    xor_blocks_portable(blocks, pattern);
}

/// Rotate the key so that byte 0 of the result masks payload byte `offset`.
#[inline]
fn rotate(key: [u8; 4], offset: usize) -> [u8; 4] {
    // Byte 0 is the least significant in little-endian order: moving byte i to position
    // i - r is a right rotation by 8 r bits.
    u32::from_le_bytes(key).rotate_right(8 * (offset % 4) as u32).to_le_bytes()
}

/// The byte-at-a-time definition from §5.3, kept for tests and benchmarks.
#[doc(hidden)]
pub fn mask_naive(buf: &mut [u8], key: [u8; 4], offset: usize) {
    for (i, b) in buf.iter_mut().enumerate() {
        *b ^= key[(offset + i) % 4];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_example() {
        // §5.7: "Hello" masked with 37 fa 21 3d.
        let mut b = [0x7f, 0x9f, 0x4d, 0x51, 0x58];
        apply_mask(&mut b, [0x37, 0xfa, 0x21, 0x3d], 0);
        assert_eq!(&b, b"Hello");
    }

    #[test]
    fn fast_equals_naive_at_every_length_offset_and_alignment() {
        let key = [0x12, 0x34, 0x56, 0x78];
        let data: Vec<u8> = (0..300u32).map(|i| (i * 7 + 3) as u8).collect();
        for start in 0..8 {
            for len in 0..(data.len() - start) {
                for offset in 0..5 {
                    let mut fast = data[start..start + len].to_vec();
                    let mut slow = fast.clone();
                    apply_mask(&mut fast, key, offset);
                    mask_naive(&mut slow, key, offset);
                    assert_eq!(fast, slow, "start {start} len {len} offset {offset}");
                }
            }
        }
    }

    #[test]
    fn portable_blocks_equal_naive() {
        let key = [0x9a, 0xbc, 0xde, 0xf0];
        let mut blocks = [[0u8; 32]; 5];
        for (i, b) in blocks.as_flattened_mut().iter_mut().enumerate() {
            *b = (i * 13) as u8;
        }
        let mut naive = blocks.as_flattened().to_vec();
        xor_blocks_portable(&mut blocks, &std::array::from_fn(|i| key[i & 3]));
        mask_naive(&mut naive, key, 0);
        assert_eq!(blocks.as_flattened(), &naive[..]);
    }

    #[test]
    fn pieces_equal_whole() {
        let key = [1, 2, 3, 4];
        let mut whole: Vec<u8> = (0..100).collect();
        let mut pieces = whole.clone();
        apply_mask(&mut whole, key, 0);
        let (a, rest) = pieces.split_at_mut(7);
        let (b, c) = rest.split_at_mut(45);
        apply_mask(a, key, 0);
        apply_mask(b, key, 7);
        apply_mask(c, key, 52);
        assert_eq!(whole, pieces);
    }
}
