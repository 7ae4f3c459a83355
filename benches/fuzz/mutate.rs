//! The seeded mutator: turns corpus entries into new inputs with byte and
//! bit flips, inserts, deletes, duplicated ranges, splices between two
//! entries, and "interesting" length prefixes (bincode varints with the
//! 0xFB/0xFC/0xFD markers, big-endian u32 frame lengths) around each
//! target's limit, 2^31, 2^32 - 1 and 2^60.
//!
//! Owns only the choice of bytes. Must never read a clock or the OS's
//! randomness: the same seed gives the same inputs, in the same order.

/// SplitMix64: small, fast, and fully determined by its seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number below `n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Bytes that often change a decoder's path: zero, extremes, and bincode's
/// varint markers (0xFB u16, 0xFC u32, 0xFD u64, 0xFE u128 follow).
const INTERESTING_BYTES: [u8; 10] = [0, 1, 0x7F, 0x80, 0xFA, 0xFB, 0xFC, 0xFD, 0xFE, 0xFF];

/// Lengths worth claiming, besides the target's own limit and its
/// neighbours: the 2^60 of issue 11, u32 and i32 extremes, u64::MAX.
fn interesting_len(rng: &mut Rng, limit: usize) -> u64 {
    let limit = limit as u64;
    match rng.below(10) {
        0 => 1 << 60,
        1 => u32::MAX as u64,
        2 => 1 << 31,
        3 => u64::MAX,
        4 => limit,
        5 => limit + 1,
        6 => limit.saturating_mul(2) + 1,
        7 => 1 << rng.below(64),
        8 => rng.below(300) as u64,
        _ => limit.saturating_sub(1),
    }
}

/// A bincode (standard config) varint for `v`.
pub fn varint(v: u64, out: &mut Vec<u8>) {
    match v {
        0..=250 => out.push(v as u8),
        251..=0xFFFF => {
            out.push(0xFB);
            out.extend_from_slice(&(v as u16).to_le_bytes());
        }
        0x1_0000..=0xFFFF_FFFF => {
            out.push(0xFC);
            out.extend_from_slice(&(v as u32).to_le_bytes());
        }
        _ => {
            out.push(0xFD);
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
}

/// How a target's inputs are shaped, for the mutator.
#[derive(Clone, Copy)]
pub struct Shape {
    /// Longest input made, in bytes.
    pub max_input_bytes: usize,
    /// The decoder's frame limit, for interesting lengths.
    pub limit_bytes: usize,
    /// The input starts with a big-endian u32 frame length.
    pub framed: bool,
    /// Tokens of a text format (JSON, YAML) to insert; empty for bincode.
    pub dict: &'static [&'static str],
}

/// Writes into `out` a mutant of `base`, sometimes spliced with `other`.
pub fn mutate(rng: &mut Rng, base: &[u8], other: &[u8], shape: Shape, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(base);
    let rounds = 1 + rng.below(4);
    for _ in 0..rounds {
        one(rng, other, shape, out);
    }
    out.truncate(shape.max_input_bytes);
    if shape.framed && out.len() >= 4 && rng.below(4) != 0 {
        // Keep the frame length true most of the time, so the body is reached.
        let body = (out.len() - 4) as u32;
        out[..4].copy_from_slice(&body.to_be_bytes());
    }
}

fn one(rng: &mut Rng, other: &[u8], shape: Shape, out: &mut Vec<u8>) {
    let len = out.len();
    let at = if len == 0 { 0 } else { rng.below(len) };
    match rng.below(if shape.dict.is_empty() { 12 } else { 14 }) {
        0 if len > 0 => out[at] ^= 1 << rng.below(8),
        1 if len > 0 => out[at] = rng.next() as u8,
        2 if len > 0 => out[at] = INTERESTING_BYTES[rng.below(INTERESTING_BYTES.len())],
        3 => {
            let n = 1 + rng.below(8);
            let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
            out.splice(at..at, bytes);
        }
        4 if len > 0 => {
            let n = 1 + rng.below((len - at).min(16));
            out.drain(at..at + n);
        }
        5 if len > 0 => {
            let n = 1 + rng.below((len - at).min(32));
            let copy: Vec<u8> = out[at..at + n].to_vec();
            let to = rng.below(len + 1);
            out.splice(to..to, copy);
        }
        6 if !other.is_empty() => {
            let cut = rng.below(other.len());
            out.truncate(at);
            out.extend_from_slice(&other[cut..]);
        }
        7 | 8 => {
            // Overwrite (or insert) a varint length prefix.
            let mut v = Vec::new();
            varint(interesting_len(rng, shape.limit_bytes), &mut v);
            if rng.below(2) == 0 {
                let end = (at + v.len()).min(len);
                out.splice(at..end, v);
            } else {
                out.splice(at..at, v);
            }
        }
        9 if shape.framed && len >= 4 => {
            let claim = interesting_len(rng, shape.limit_bytes).min(u32::MAX as u64) as u32;
            out[..4].copy_from_slice(&claim.to_be_bytes());
        }
        11 if !shape.dict.is_empty() => {
            let token = shape.dict[rng.below(shape.dict.len())].as_bytes();
            out.splice(at..at, token.iter().copied());
        }
        10 if len > 0 => {
            // Arithmetic on one byte: counts and lengths off by a little.
            let d = rng.below(35) as u8;
            out[at] =
                if rng.below(2) == 0 { out[at].wrapping_add(d) } else { out[at].wrapping_sub(d) };
        }
        12 | 13 if !shape.dict.is_empty() => {
            let token = shape.dict[rng.below(shape.dict.len())].as_bytes();
            let end = (at + token.len()).min(len);
            out.splice(at..end, token.iter().copied());
        }
        _ if len > 0 => out[at] ^= 0xFF,
        _ => out.push(rng.next() as u8),
    }
}
