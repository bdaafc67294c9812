//! Floating-point numbers written as JavaScript writes them (`Number.prototype.toString`, which
//! `JSON.stringify` uses): `1` rather than `1.0`, `100000000000000000000` rather than `1e20`,
//! `1e+21`, `0.000001`, `1.5e-7`, and `0` for negative zero.
//!
//! Clients read a server's numbers into their own types: a C++, Go or C# client takes `1` for
//! an integer and `1.0` for a float, so a number a Python client sent as `2.0` and the server
//! relays has to come out as the reference server writes it for a Go client to read it into an
//! `int`.

use std::fmt::Write as _;

/// A number's text, on the stack: the longest JavaScript writes is 25 bytes
/// (`-0.0000012345678901234567`).
pub struct JsNumber(Buf);

impl JsNumber {
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII is ever written.
        std::str::from_utf8(self.as_bytes()).unwrap_or_default()
    }
}

/// A finite `value` with the shortest digits that read back as it; NaN and the infinities
/// are `null`, as `JSON.stringify` writes them.
pub fn f64_text(value: f64) -> JsNumber {
    text(value.is_finite(), value == 0.0, value)
}

/// As [`f64_text`], with the shortest digits that read back as the `f32` (`0.1`, not the
/// `0.10000000149011612` its value is as an `f64`), as serde_json writes an `f32`.
pub fn f32_text(value: f32) -> JsNumber {
    text(value.is_finite(), value == 0.0, value)
}

fn text(finite: bool, zero: bool, value: impl serde::Serialize) -> JsNumber {
    let mut json = Buf::default();
    if !finite {
        json.push_all(b"null");
        return JsNumber(json);
    }
    if zero {
        // Whatever its sign, as `String(-0)`.
        json.push(b'0');
        return JsNumber(json);
    }
    // serde_json's digits are the shortest that read back, and of two such the even one, as
    // ECMAScript asks (Rust's own `{:e}` rounds that tie up).
    let _ = serde_json::to_writer(&mut json, &value);
    JsNumber(lay_out(json.as_bytes()))
}

/// Rewrites a JSON number (`1.0`, `0.001`, `1.5e-7`, `1e20`) in the layout ECMAScript's
/// `Number::toString` gives: with its `k` significant digits and the decimal point `n` places
/// after the first, plain digits while `-6 < n <= 21`, exponent form (`d.ddde+x`) beyond.
fn lay_out(json: &[u8]) -> Buf {
    let (negative, json) = match json.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, json),
    };
    let e_at = json
        .iter()
        .position(|&b| b == b'e' || b == b'E')
        .unwrap_or(json.len());
    let (mantissa, exponent) = json.split_at(e_at);
    let exponent: i32 = std::str::from_utf8(exponent.get(1..).unwrap_or_default())
        .ok()
        .and_then(|e| e.trim_start_matches('+').parse().ok())
        .unwrap_or(0);
    let point = mantissa
        .iter()
        .position(|&b| b == b'.')
        .unwrap_or(mantissa.len());
    let all_digits = mantissa.iter().copied().filter(u8::is_ascii_digit);
    let leading_zeros = all_digits.clone().take_while(|&b| b == b'0').count();
    let mut digits = Buf::default();
    for b in all_digits.skip(leading_zeros) {
        digits.push(b);
    }
    while digits.as_bytes().last() == Some(&b'0') {
        digits.len -= 1;
    }
    let digits = digits.as_bytes();
    if digits.is_empty() {
        let mut zero = Buf::default();
        zero.push(b'0');
        return zero;
    }
    let k = digits.len() as i32;
    let n = point as i32 - leading_zeros as i32 + exponent;
    let mut out = Buf::default();
    if negative {
        out.push(b'-');
    }
    if k <= n && n <= 21 {
        out.push_all(digits);
        out.push_zeros(n - k);
    } else if 0 < n && n <= 21 {
        let (int, frac) = digits.split_at(n as usize);
        out.push_all(int);
        out.push(b'.');
        out.push_all(frac);
    } else if -6 < n && n <= 0 {
        out.push_all(b"0.");
        out.push_zeros(-n);
        out.push_all(digits);
    } else {
        out.push_all(&digits[..1]);
        if k > 1 {
            out.push(b'.');
            out.push_all(&digits[1..]);
        }
        let _ = write!(out, "e{}{}", if n > 0 { "+" } else { "-" }, (n - 1).abs());
    }
    out
}

/// A few bytes on the stack; what does not fit is dropped (nothing written here is longer).
#[derive(Default)]
struct Buf {
    bytes: [u8; 32],
    len: usize,
}

impl Buf {
    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    fn push(&mut self, b: u8) {
        if let Some(slot) = self.bytes.get_mut(self.len) {
            *slot = b;
            self.len += 1;
        }
    }

    fn push_all(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.push(b);
        }
    }

    fn push_zeros(&mut self, count: i32) {
        for _ in 0..count {
            self.push(b'0');
        }
    }
}

impl std::io::Write for Buf {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.push_all(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl std::fmt::Write for Buf {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.push_all(s.as_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f64_str(v: f64) -> String {
        f64_text(v).as_str().to_owned()
    }

    fn f32_str(v: f32) -> String {
        f32_text(v).as_str().to_owned()
    }

    /// What `JSON.stringify(x)` gives in Node for each.
    #[test]
    fn numbers_are_written_as_javascript_writes_them() {
        for (value, js) in [
            (1.0, "1"),
            (-1.0, "-1"),
            (100.0, "100"),
            (0.5, "0.5"),
            (-0.0, "0"),
            (0.1, "0.1"),
            (123.456, "123.456"),
            (123456789012.0, "123456789012"),
            (1e20, "100000000000000000000"),
            (1e21, "1e+21"),
            (1.5e21, "1.5e+21"),
            (123456789e20, "1.23456789e+28"),
            (0.000001, "0.000001"),
            (0.0000015, "0.0000015"),
            (1e-7, "1e-7"),
            (1.5e-7, "1.5e-7"),
            (-2.5e-10, "-2.5e-10"),
            (5e-324, "5e-324"),
            (f64::MAX, "1.7976931348623157e+308"),
            (f64::MIN_POSITIVE, "2.2250738585072014e-308"),
            (9007199254740993.0, "9007199254740992"),
            (0.30000000000000004, "0.30000000000000004"),
            (1.7976931348623157e300, "1.7976931348623156e+300"),
            // Halfway between two shortest forms: the even digit.
            (562949953421312.0 + 0.25, "562949953421312.2"),
            (916029143278882.0 + 0.25, "916029143278882.2"),
            (f64::NAN, "null"),
            (f64::NEG_INFINITY, "null"),
        ] {
            assert_eq!(f64_str(value), js, "{value:?}");
        }
    }

    #[test]
    fn f32_values_keep_their_own_shortest_digits() {
        assert_eq!(f32_str(0.1), "0.1");
        // As serde_json writes them: of two shortest forms, the even one.
        assert_eq!(f32_str(1.0 + 17.0 / 256.0), "1.0664062");
        assert_eq!(f32_str(41.0 / 1024.0), "0.040039062");
        assert_eq!(f32_str(2.0), "2");
        assert_eq!(f32_str(-0.0), "0");
        assert_eq!(f32_str(1e21), "1e+21");
        assert_eq!(f32_str(f32::INFINITY), "null");
    }

    #[test]
    fn every_layout_reads_back_as_the_same_number() {
        let mut x = 1.234_567_890_123_e-12_f64;
        while x < 1e30 {
            for v in [x, -x, x.round(), x * 3.0] {
                let text = f64_str(v);
                assert_eq!(text.parse::<f64>().unwrap(), v, "{text}");
            }
            x *= 7.77;
        }
    }
}
