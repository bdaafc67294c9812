//! Query strings. `+` and `%XX` escapes are decoded, as the reference server's
//! `URLSearchParams` decodes them: clients escape what they put in a query (a token, a name with
//! spaces), and the server sees what they meant.
//!
//! Of a repeated key the first occurrence wins, everywhere: in Engine.IO's own parameters and in
//! what the application reads, so that one request cannot name a session or a version to one
//! layer and something else to another. (Node keeps the last; a stock client never repeats one.)

use std::borrow::Cow;

/// Every `key=value` pair in order, decoded; a pair without `=` has an empty value.
pub fn pairs(query: &str) -> impl Iterator<Item = (Cow<'_, str>, Cow<'_, str>)> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(key), decode(value))
        })
}

/// The value of `key`: its first occurrence, decoded.
pub fn get<'a>(query: &'a str, key: &str) -> Option<Cow<'a, str>> {
    pairs(query).find(|(k, _)| k == key).map(|(_, v)| v)
}

/// `+` as a space and `%XX` escapes as their bytes; an escape that is not two hex digits stays
/// as it is, and bytes that are not UTF-8 become U+FFFD. Borrows when there is nothing to decode,
/// which is nearly always.
pub fn decode(s: &str) -> Cow<'_, str> {
    if !s.bytes().any(|b| b == b'%' || b == b'+') {
        return Cow::Borrowed(s);
    }
    let bytes = s.as_bytes();
    let hex = |b: u8| (b as char).to_digit(16);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = match bytes[i..] {
            [b'%', h, l, ..] => hex(h).zip(hex(l)).map(|(h, l)| (h * 16 + l) as u8),
            _ => None,
        };
        match (escaped, bytes[i]) {
            (Some(byte), _) => {
                out.push(byte);
                i += 3;
            }
            (None, b'+') => {
                out.push(b' ');
                i += 1;
            }
            (None, b) => {
                out.push(b);
                i += 1;
            }
        }
    }
    match String::from_utf8(out) {
        Ok(s) => Cow::Owned(s),
        Err(e) => Cow::Owned(String::from_utf8_lossy(e.as_bytes()).into_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_plus_are_decoded() {
        assert_eq!(decode("EIO"), "EIO");
        assert!(matches!(decode("plain"), Cow::Borrowed(_)));
        assert_eq!(decode("%34"), "4");
        assert_eq!(decode("a+b%20c"), "a b c");
        assert_eq!(decode("%E2%9C%93"), "✓");
        assert_eq!(decode("%2B%25"), "+%");
    }

    #[test]
    fn broken_escapes_stay_as_they_are() {
        assert_eq!(decode("%"), "%");
        assert_eq!(decode("%4"), "%4");
        assert_eq!(decode("%zz1"), "%zz1");
        assert_eq!(decode("100%"), "100%");
        assert_eq!(decode("%ff"), "\u{FFFD}");
    }

    #[test]
    fn the_first_occurrence_wins() {
        let q = "EIO=4&transport=polling&sid=a&sid=b&flag&t=x";
        assert_eq!(get(q, "sid").as_deref(), Some("a"));
        assert_eq!(get(q, "flag").as_deref(), Some(""));
        assert_eq!(get(q, "missing"), None);
        assert_eq!(get("", "sid"), None);
        assert_eq!(get("%45IO=%34", "EIO").as_deref(), Some("4"));
    }

    #[test]
    fn pairs_keep_their_order_and_skip_empty_ones() {
        let all: Vec<_> = pairs("a=1&&b=x+y&a=2").collect();
        assert_eq!(
            all,
            [
                ("a".into(), "1".into()),
                ("b".into(), "x y".into()),
                ("a".into(), "2".into())
            ]
        );
    }
}
