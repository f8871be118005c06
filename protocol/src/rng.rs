//! A tiny seeded pseudo-random generator (xorshift64*) for tests, fuzz-style
//! mutation and deterministic simulation: the same seed replays the same run.
//! Not cryptographic; keys come from the OS (`Keypair::generate`).

/// xorshift64*: fast, small state, good enough to pick faults and mutations.
#[derive(Clone, Debug)]
pub struct SeededRng(u64);

impl SeededRng {
    /// A generator for `seed` (zero is mapped to a fixed non-zero state).
    pub fn new(seed: u64) -> SeededRng {
        SeededRng(if seed == 0 { 0x9E37_79B9_7F4A_7C15 } else { seed })
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A value in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }
}
