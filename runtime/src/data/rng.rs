//! Reproducible random numbers for shuffling, random transforms and the
//! synthetic data set.
//!
//! Every stream is a ChaCha8 generator keyed by (seed, purpose, epoch,
//! index), so a sample's random crop depends on nothing but those four
//! numbers: not on the worker that loads it, nor on what was loaded before.
//! The integer and float draws are implemented here (not taken from `rand`)
//! so the values stay the same across platforms and dependency upgrades.

use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{Rng, SeedableRng};

/// What a stream is used for; keeps streams of different purposes apart.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Purpose {
    Shuffle = 1,
    Transform = 2,
    Synthetic = 3,
}

/// A reproducible random stream for one sample (or one shuffle).
///
/// Custom [`Transform`](super::Transform)s draw from it; the stream a sample
/// gets is fixed by the loader's seed, the epoch and the sample's index in
/// the data set.
#[derive(Clone, Debug)]
pub struct SampleRng {
    rng: ChaCha8Rng,
}

impl SampleRng {
    /// The stream the loader hands the transforms of sample `index` in
    /// `epoch` under `seed`.
    pub fn for_sample(seed: u64, epoch: u64, index: u64) -> SampleRng {
        SampleRng::keyed(seed, Purpose::Transform, epoch, index)
    }

    pub(crate) fn keyed(seed: u64, purpose: Purpose, a: u64, b: u64) -> SampleRng {
        let mut key = [0u8; 32];
        key[0..8].copy_from_slice(&seed.to_le_bytes());
        key[8..16].copy_from_slice(&(purpose as u64).to_le_bytes());
        key[16..24].copy_from_slice(&a.to_le_bytes());
        key[24..32].copy_from_slice(&b.to_le_bytes());
        SampleRng {
            rng: ChaCha8Rng::from_seed(key),
        }
    }

    /// 32 random bits.
    pub fn next_u32(&mut self) -> u32 {
        self.rng.next_u32()
    }

    /// 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.rng.next_u64()
    }

    /// A float uniform in `[0, 1)`, with 24 random bits.
    pub fn next_f32(&mut self) -> f32 {
        (self.next_u32() >> 8) as f32 * (1.0 / (1u32 << 24) as f32)
    }

    /// A float uniform in `[lo, hi)`.
    pub fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.next_f32()
    }

    /// An integer uniform in `0..n` (without bias); 0 when `n` is 0.
    pub fn below(&mut self, n: usize) -> usize {
        if n <= 1 {
            return 0;
        }
        let n = n as u64;
        // Lemire's multiply-and-reject method.
        let threshold = n.wrapping_neg() % n;
        loop {
            let x = self.next_u64();
            let m = u128::from(x) * u128::from(n);
            if (m as u64) >= threshold {
                return (m >> 64) as usize;
            }
        }
    }

    /// `true` with probability `p` (one draw, whatever `p` is).
    pub fn bernoulli(&mut self, p: f32) -> bool {
        self.next_f32() < p
    }
}

/// The order of `n` samples in `epoch`: a Fisher-Yates shuffle driven by a
/// stream keyed by (`seed`, `epoch`).
pub fn permutation(n: usize, seed: u64, epoch: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    let mut rng = SampleRng::keyed(seed, Purpose::Shuffle, epoch, 0);
    for i in (1..n).rev() {
        let j = rng.below(i + 1);
        order.swap(i, j);
    }
    order
}
