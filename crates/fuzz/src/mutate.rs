//! Byte-level mutations from a seeded generator: the same seed and pool give
//! the same inputs, so a run can be repeated.

use rand::Rng;
use rand::rngs::StdRng;

/// Bytes worth trying anywhere: boundaries of integers, protobuf varint
/// edges, JSON and TOML punctuation.
const INTERESTING_BYTES: &[u8] = &[
    0x00, 0x01, 0x7f, 0x80, 0xff, 0xfe, b'0', b'9', b'a', b'z', b'"', b'\\', b'{', b'}', b'[',
    b']', b':', b',', b'=', b'\n', b'/', b'%', b'.', b'-',
];

/// Numbers worth trying where digits stand.
const INTERESTING_NUMBERS: &[&str] = &[
    "0",
    "1",
    "-1",
    "255",
    "256",
    "1000",
    "1001",
    "65535",
    "2147483647",
    "2147483648",
    "-2147483648",
    "4294967296",
    "9223372036854775807",
    "9223372036854775808",
    "-9223372036854775808",
    "18446744073709551616",
    "999999999",
    "1000000000",
    "1e309",
    "0.5",
];

pub struct Mutator<'a> {
    rng: StdRng,
    dictionary: &'a [&'a [u8]],
    max_len: usize,
}

impl<'a> Mutator<'a> {
    pub fn new(rng: StdRng, dictionary: &'a [&'a [u8]], max_len: usize) -> Self {
        Self {
            rng,
            dictionary,
            max_len: max_len.max(1),
        }
    }

    pub fn rng(&mut self) -> &mut StdRng {
        &mut self.rng
    }

    /// A new input from `base`, with one to eight stacked mutations; `other`
    /// is another pool input to splice from.
    pub fn mutate(&mut self, base: &[u8], other: &[u8]) -> Vec<u8> {
        let mut data = base.to_vec();
        let rounds = 1 + self.rng.random_range(0..8usize).trailing_zeros().min(7) as usize;
        for _ in 0..rounds {
            self.once(&mut data, other);
        }
        data.truncate(self.max_len);
        data
    }

    fn once(&mut self, data: &mut Vec<u8>, other: &[u8]) {
        let rng = &mut self.rng;
        match rng.random_range(0..12u32) {
            // flip one bit
            0 if !data.is_empty() => {
                let i = rng.random_range(0..data.len());
                data[i] ^= 1 << rng.random_range(0..8u32);
            }
            // set a byte to an interesting or random value
            1 if !data.is_empty() => {
                let i = rng.random_range(0..data.len());
                data[i] = if rng.random_bool(0.5) {
                    INTERESTING_BYTES[rng.random_range(0..INTERESTING_BYTES.len())]
                } else {
                    rng.random()
                };
            }
            // insert a few bytes
            2 => {
                let at = rng.random_range(0..=data.len());
                let count = rng.random_range(1..=4usize);
                for _ in 0..count {
                    let byte = if rng.random_bool(0.5) {
                        INTERESTING_BYTES[rng.random_range(0..INTERESTING_BYTES.len())]
                    } else {
                        rng.random()
                    };
                    data.insert(at, byte);
                }
            }
            // delete a range
            3 if !data.is_empty() => {
                let at = rng.random_range(0..data.len());
                let len = rng.random_range(1..=(data.len() - at).min(16));
                data.drain(at..at + len);
            }
            // copy a range of the input elsewhere in it
            4 if !data.is_empty() => {
                let from = rng.random_range(0..data.len());
                let len = rng.random_range(1..=(data.len() - from).min(32));
                let chunk = data[from..from + len].to_vec();
                let at = rng.random_range(0..=data.len());
                data.splice(at..at, chunk);
            }
            // insert a dictionary token
            5 | 6 if !self.dictionary.is_empty() => {
                let token = self.dictionary[rng.random_range(0..self.dictionary.len())];
                let at = rng.random_range(0..=data.len());
                data.splice(at..at, token.iter().copied());
            }
            // overwrite with a dictionary token
            7 if !self.dictionary.is_empty() && !data.is_empty() => {
                let token = self.dictionary[rng.random_range(0..self.dictionary.len())];
                let at = rng.random_range(0..data.len());
                let end = (at + token.len()).min(data.len());
                data.splice(at..end, token.iter().copied());
            }
            // splice: a prefix of this input, a suffix of another
            8 if !other.is_empty() => {
                let cut = rng.random_range(0..=data.len());
                let from = rng.random_range(0..other.len());
                data.truncate(cut);
                data.extend_from_slice(&other[from..]);
            }
            // replace a run of ASCII digits with an interesting number
            9 => {
                let digits: Vec<usize> = (0..data.len())
                    .filter(|&i| data[i].is_ascii_digit())
                    .collect();
                if let Some(&start) = digits.get(rng.random_range(0..digits.len().max(1))) {
                    let end = (start..data.len())
                        .find(|&i| !data[i].is_ascii_digit())
                        .unwrap_or(data.len());
                    let number =
                        INTERESTING_NUMBERS[rng.random_range(0..INTERESTING_NUMBERS.len())];
                    data.splice(start..end, number.bytes());
                }
            }
            // swap two bytes
            10 if data.len() >= 2 => {
                let a = rng.random_range(0..data.len());
                let b = rng.random_range(0..data.len());
                data.swap(a, b);
            }
            // repeat a chunk many times (long strings, deep nesting)
            11 if !data.is_empty() => {
                let from = rng.random_range(0..data.len());
                let len = rng.random_range(1..=(data.len() - from).min(8));
                let chunk = data[from..from + len].to_vec();
                let times = rng.random_range(2..=64usize);
                let at = rng.random_range(0..=data.len());
                let repeated: Vec<u8> = chunk.iter().copied().cycle().take(len * times).collect();
                data.splice(at..at, repeated);
            }
            // on an empty input, or a case whose guard failed: a random byte
            _ => data.push(rng.random()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn the_same_seed_gives_the_same_inputs() {
        let dictionary: &[&[u8]] = &[b"operation_id", b"\"done\""];
        let run = |seed| {
            let mut m = Mutator::new(StdRng::seed_from_u64(seed), dictionary, 64);
            let mut data = b"ops0123456789abcdefg".to_vec();
            let mut all = Vec::new();
            for _ in 0..200 {
                data = m.mutate(&data, b"other input");
                all.push(data.clone());
            }
            all
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
        assert!(run(7).iter().all(|d| d.len() <= 64));
    }
}
