//! Payloads: seeded pseudo-random bytes, so every run sends the same, datagrams that name
//! their sender, and a byte comparison that reports where two payloads differ instead of
//! dumping megabytes.

/// xorshift64*: a tiny deterministic generator, so every run sends the same bytes.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed`; nearby seeds give unrelated streams.
    pub fn new(seed: u64) -> Self {
        // The state must not be zero; mix the seed so nearby seeds give unrelated streams.
        Rng((seed ^ 0x9E37_79B9_7F4A_7C15).max(1))
    }

    /// The next 64 pseudo-random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n`; `n` must not be zero.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// Fills `buf` with pseudo-random bytes.
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let word = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
    }
}

/// `len` pseudo-random bytes from `seed`: the same for the same seed, different for each.
pub fn payload(seed: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0; len];
    Rng::new(seed).fill(&mut v);
    v
}

/// A datagram of `len` bytes (at least 8) that names its sender: `client` and `seq` as
/// little-endian `u32`s, then pseudo-random bytes.
pub fn tagged(client: u32, seq: u32, len: usize) -> Vec<u8> {
    let len = len.max(8);
    let mut v = payload((u64::from(client) << 32) | u64::from(seq), len);
    v[..4].copy_from_slice(&client.to_le_bytes());
    v[4..8].copy_from_slice(&seq.to_le_bytes());
    v
}

/// The `(client, seq)` tag of a datagram made by [`tagged`].
pub fn tag_of(head: &[u8]) -> Option<(u32, u32)> {
    let client = u32::from_le_bytes(head.get(..4)?.try_into().ok()?);
    let seq = u32::from_le_bytes(head.get(4..8)?.try_into().ok()?);
    Some((client, seq))
}

/// Asserts two byte strings are equal, reporting lengths and the first differing offset
/// instead of dumping megabytes.
#[track_caller]
pub fn assert_bytes(what: &str, got: &[u8], want: &[u8]) {
    if got == want {
        return;
    }
    let first = got
        .iter()
        .zip(want)
        .position(|(a, b)| a != b)
        .unwrap_or(got.len().min(want.len()));
    panic!(
        "{what}: got {} bytes, want {}; first difference at offset {first}",
        got.len(),
        want.len()
    );
}
