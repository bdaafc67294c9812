//! Standard base64 (RFC 4648, with padding), for binary messages over long-polling.

use bytes::BufMut;

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Marks a byte that is not in the alphabet.
const INVALID: u8 = 0xFF;

/// The value of each alphabet byte, [`INVALID`] for every other byte (`=` included).
const VALUES: [u8; 256] = {
    let mut table = [INVALID; 256];
    let mut i = 0;
    while i < 64 {
        table[ALPHABET[i] as usize] = i as u8;
        i += 1;
    }
    table
};

/// The two characters of every 12-bit value, first one in the low byte: half the lookups and
/// shifts of one character at a time, in a table (8 KiB) that stays in the L1 cache.
const PAIRS: [u16; 4096] = {
    let mut table = [0; 4096];
    let mut i = 0;
    while i < 4096 {
        table[i] = ALPHABET[i >> 6] as u16 | (ALPHABET[i & 63] as u16) << 8;
        i += 1;
    }
    table
};

/// Set in [`quad`]'s result when one of its characters is invalid.
const QUAD_INVALID: u32 = 0xFF00_0000;

/// [`VALUES`] shifted into place for each of the four characters of a group, invalid bytes
/// marked by [`QUAD_INVALID`]: a group's 24 bits are four lookups OR-ed, with one test.
const QUAD: [[u32; 256]; 4] = {
    let mut tables = [[QUAD_INVALID; 256]; 4];
    let mut k = 0;
    while k < 4 {
        let mut c = 0;
        while c < 256 {
            if VALUES[c] != INVALID {
                tables[k][c] = (VALUES[c] as u32) << (18 - 6 * k);
            }
            c += 1;
        }
        k += 1;
    }
    tables
};

/// The 24 bits of four characters, with [`QUAD_INVALID`] set if one of them is invalid.
fn quad(a: u8, b: u8, c: u8, d: u8) -> u32 {
    QUAD[0][usize::from(a)]
        | QUAD[1][usize::from(b)]
        | QUAD[2][usize::from(c)]
        | QUAD[3][usize::from(d)]
}

/// Input bytes encoded into a stack buffer per `put_slice`: `BufMut`'s own room (`chunk_mut`)
/// can only be written through its checked copies without `unsafe`, and one call per kilobyte
/// of output keeps `BytesMut`'s bookkeeping out of the loop.
const ENCODE_BLOCK: usize = 3 * 256;

/// Length of the encoding of `n` bytes.
pub fn encoded_len(n: usize) -> usize {
    n.div_ceil(3) * 4
}

/// Appends the encoding of `data` to `out` ([`encoded_len`] bytes, which callers reserve).
pub fn encode_into(data: &[u8], out: &mut impl BufMut) {
    let mut buf = [0u8; ENCODE_BLOCK / 3 * 4];
    let mut blocks = data.chunks_exact(ENCODE_BLOCK);
    for block in &mut blocks {
        encode_triples(block, &mut buf);
        out.put_slice(&buf);
    }
    let rest = blocks.remainder();
    let whole = rest.len() / 3 * 3;
    let n = encode_triples(&rest[..whole], &mut buf);
    let tail = match rest[whole..] {
        [a] => {
            let n = u32::from(a) << 16;
            [char_at(n, 18), char_at(n, 12), b'=', b'=']
        }
        [a, b] => {
            let n = (u32::from(a) << 16) | (u32::from(b) << 8);
            [char_at(n, 18), char_at(n, 12), char_at(n, 6), b'=']
        }
        _ => {
            out.put_slice(&buf[..n]);
            return;
        }
    };
    buf[n..n + 4].copy_from_slice(&tail);
    out.put_slice(&buf[..n + 4]);
}

/// Encodes `data` (a multiple of 3 bytes that fits) at the start of `out`; returns the length.
///
/// Six bytes at a time become one 8-byte store, where byte by byte the stores were the limit.
fn encode_triples(data: &[u8], out: &mut [u8]) -> usize {
    let len = data.len() / 3 * 4;
    let mut sixes = data.chunks_exact(6);
    let mut eights = out[..len].chunks_exact_mut(8);
    for (o, c) in (&mut eights).zip(&mut sixes) {
        let n = u64::from_be_bytes([0, 0, c[0], c[1], c[2], c[3], c[4], c[5]]);
        let chars = (0..4).fold(0u64, |acc, i| {
            acc | u64::from(PAIRS[(n >> (36 - 12 * i)) as usize & 0xFFF]) << (16 * i)
        });
        o.copy_from_slice(&chars.to_le_bytes());
    }
    if let [a, b, c] = *sixes.remainder() {
        let n = (u32::from(a) << 16) | (u32::from(b) << 8) | u32::from(c);
        let o = eights.into_remainder();
        o.copy_from_slice(&[char_at(n, 18), char_at(n, 12), char_at(n, 6), char_at(n, 0)]);
    }
    len
}

fn char_at(n: u32, shift: u32) -> u8 {
    ALPHABET[(n >> shift) as usize & 63]
}

/// Decodes padded or unpadded base64; `None` on any invalid character or length.
///
/// ASCII whitespace is skipped wherever it is, as `atob` and Node's `Buffer.from(s, "base64")`
/// do: Java's engine.io-client sends binary over polling with Android's `Base64.DEFAULT`, which
/// breaks lines every 76 characters and ends with a newline. Input without whitespace, which
/// every other client sends, is decoded in place; only input that fails that way is searched
/// for whitespace and, if it has some, decoded again without it.
pub fn decode(input: &[u8]) -> Option<Vec<u8>> {
    decode_unbroken(input).or_else(|| {
        if !input.iter().any(u8::is_ascii_whitespace) {
            return None;
        }
        let joined: Vec<u8> = input
            .iter()
            .copied()
            .filter(|c| !c.is_ascii_whitespace())
            .collect();
        decode_unbroken(&joined)
    })
}

/// Decodes base64 that has no whitespace.
fn decode_unbroken(input: &[u8]) -> Option<Vec<u8>> {
    let trimmed = match input {
        [rest @ .., b'=', b'='] => rest,
        [rest @ .., b'='] => rest,
        _ => input,
    };
    if trimmed.len() % 4 == 1 || (input.len() != trimmed.len() && input.len() % 4 != 0) {
        return None;
    }
    let whole = trimmed.len() / 4;
    let tail = &trimmed[whole * 4..];
    // A tail of 2 or 3 characters carries 1 or 2 bytes.
    let mut out = vec![0; whole * 3 + tail.len().saturating_sub(1)];
    let (body, out_tail) = out.split_at_mut(whole * 3);
    // Eight characters at a time: eight lookups, one test and one 6-byte store (a lookup and a
    // test per character, a store per byte, took three times as long).
    let mut eights = trimmed[..whole * 4].chunks_exact(8);
    let mut sixes = body.chunks_exact_mut(6);
    for (o, c) in (&mut sixes).zip(&mut eights) {
        let hi = quad(c[0], c[1], c[2], c[3]);
        let lo = quad(c[4], c[5], c[6], c[7]);
        if (hi | lo) & QUAD_INVALID != 0 {
            return None;
        }
        let n = u64::from(hi) << 24 | u64::from(lo);
        o.copy_from_slice(&n.to_be_bytes()[2..]);
    }
    if let [a, b, c, d] = *eights.remainder() {
        let n = quad(a, b, c, d);
        if n & QUAD_INVALID != 0 {
            return None;
        }
        sixes
            .into_remainder()
            .copy_from_slice(&n.to_be_bytes()[1..]);
    }
    if let [a, b, ref rest @ ..] = *tail {
        // The missing characters count as `A`, zero bits.
        let n = quad(a, b, rest.first().copied().unwrap_or(b'A'), b'A');
        if n & QUAD_INVALID != 0 {
            return None;
        }
        out_tail.copy_from_slice(&n.to_be_bytes()[1..1 + out_tail.len()]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(data: &[u8]) -> String {
        let mut out = Vec::new();
        encode_into(data, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn known_vectors() {
        for (plain, coded) in [
            (&b""[..], ""),
            (b"f", "Zg=="),
            (b"fo", "Zm8="),
            (b"foo", "Zm9v"),
            (b"foob", "Zm9vYg=="),
            (b"fooba", "Zm9vYmE="),
            (b"foobar", "Zm9vYmFy"),
            (&[1, 2, 3, 4], "AQIDBA=="),
            (&[0xff, 0xfe, 0xfd], "//79"),
        ] {
            assert_eq!(enc(plain), coded);
            assert_eq!(decode(coded.as_bytes()).as_deref(), Some(plain));
        }
    }

    #[test]
    fn rejects_invalid_input() {
        for bad in ["A", "AB=C", "!!!!", "AQIDBA=", "AQ===", "====", "Zg==Zg=="] {
            assert_eq!(decode(bad.as_bytes()), None, "{bad}");
        }
        assert_eq!(decode(b"AQIDBA").as_deref(), Some(&[1u8, 2, 3, 4][..]));
    }

    #[test]
    fn rejects_an_invalid_character_anywhere() {
        // 28 characters, three groups of eight and one of four: each position of each path.
        let coded = enc(&[0xA5; 21]);
        for at in 0..coded.len() {
            for bad in [b'!', b'=', b'-', b'_', 0x80, 0xFF] {
                if bad == b'=' && at == coded.len() - 1 {
                    continue; // Padding there: 20 bytes.
                }
                let mut broken = coded.clone().into_bytes();
                broken[at] = bad;
                assert_eq!(decode(&broken), None, "{broken:?}");
            }
        }
    }

    /// `data` as Java's engine.io-client sends it (Android's `Base64.DEFAULT`): a line break
    /// after every 76 characters and at the end.
    fn java_style(data: &[u8], line_break: &str) -> String {
        let coded = enc(data);
        let mut out = String::new();
        for line in coded.as_bytes().chunks(76) {
            out.push_str(std::str::from_utf8(line).unwrap());
            out.push_str(line_break);
        }
        out
    }

    #[test]
    fn skips_line_breaks() {
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7 + i / 13) as u8).collect();
        for len in [100, 1000] {
            for line_break in ["\n", "\r\n"] {
                let coded = java_style(&data[..len], line_break);
                assert!(coded.matches(line_break).count() > 1, "{coded:?}");
                assert_eq!(
                    decode(coded.as_bytes()).as_deref(),
                    Some(&data[..len]),
                    "{coded:?}"
                );
            }
        }
        assert_eq!(decode(b"AQID\n").as_deref(), Some(&[1u8, 2, 3][..]));
    }

    #[test]
    fn skips_whitespace_anywhere() {
        for (coded, plain) in [
            ("\n", &b""[..]),
            (" \t\r\n ", b""),
            ("Zg=\n=", b"f"),
            ("Zg= =\n", b"f"),
            ("Z g = =", b"f"),
            ("\tZm8=", b"fo"),
            ("Zm9v\r\nYg==\r\n", b"foob"),
            ("AQID\nBA", &[1, 2, 3, 4]),
        ] {
            assert_eq!(
                decode(coded.as_bytes()).as_deref(),
                Some(plain),
                "{coded:?}"
            );
        }
    }

    #[test]
    fn whitespace_does_not_excuse_invalid_input() {
        for bad in [
            "A\n",
            "AB\n=C",
            "!!!!\n",
            "AQIDBA=\n",
            "AQ=\n==",
            "=\n===",
            "Zg==\nZg==",
            "Zm9v\u{b}",
            "Zm9v\0",
            "Zm-v\n",
        ] {
            assert_eq!(decode(bad.as_bytes()), None, "{bad:?}");
        }
    }

    #[test]
    fn round_trips_every_length() {
        let data: Vec<u8> = (0..=255u8).collect();
        for n in 0..data.len() {
            assert_eq!(
                decode(enc(&data[..n]).as_bytes()).as_deref(),
                Some(&data[..n])
            );
        }
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        fn whitespace() -> impl Strategy<Value = u8> {
            prop::sample::select(b" \t\n\r\x0c".to_vec())
        }

        proptest! {
            #[test]
            fn decode_undoes_encode(data in prop::collection::vec(any::<u8>(), 0..2048)) {
                prop_assert_eq!(decode(enc(&data).as_bytes()), Some(data));
            }

            #[test]
            fn whitespace_anywhere_changes_nothing(
                data in prop::collection::vec(any::<u8>(), 0..512),
                inserts in prop::collection::vec((any::<prop::sample::Index>(), whitespace()), 1..32),
            ) {
                let mut coded = enc(&data).into_bytes();
                for (at, c) in inserts {
                    coded.insert(at.index(coded.len() + 1), c);
                }
                prop_assert_eq!(decode(&coded), Some(data));
            }
        }
    }
}
