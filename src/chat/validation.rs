//! The login rules of the chat contract: trimming, the character set, the length cap.

use serde_json::Value;

/// Longest name or room, in characters.
pub const MAX_NAME_LEN: usize = 20;

/// The validation failures and their wire messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LoginError {
    /// Missing, not a string, or empty after trimming.
    #[error("No room or name provided")]
    Missing,
    /// Something other than ASCII letters and digits.
    #[error("Name and room may only contain letters and digits")]
    NotAlphanumeric,
    /// Longer than [`MAX_NAME_LEN`].
    #[error("Name and room must be at most 20 characters")]
    TooLong,
    /// This socket is logged in already.
    #[error("user already exists")]
    AlreadyLoggedIn,
    /// Another user of the room has this name (ASCII case ignored).
    #[error("Name is already taken in this room")]
    NameTaken,
    /// The connection logged in more often than the login rate allows.
    #[error("Too many logins, slow down")]
    TooManyLogins,
}

/// Whether `c` is white space for JavaScript's `String.prototype.trim`: the WhiteSpace and
/// LineTerminator productions of ECMAScript. Not the same set as Rust's `char::is_whitespace`
/// (U+0085 is not trimmed, U+FEFF is).
fn is_js_whitespace(c: char) -> bool {
    matches!(
        c,
        '\u{0009}'
            | '\u{000A}'
            | '\u{000B}'
            | '\u{000C}'
            | '\u{000D}'
            | '\u{0020}'
            | '\u{00A0}'
            | '\u{1680}'
            | '\u{2000}'
            ..='\u{200A}'
                | '\u{2028}'
                | '\u{2029}'
                | '\u{202F}'
                | '\u{205F}'
                | '\u{3000}'
                | '\u{FEFF}'
    )
}

/// Trims both ends the way JavaScript's `trim` does.
pub fn js_trim(s: &str) -> &str {
    s.trim_matches(is_js_whitespace)
}

fn field<'a>(payload: &'a Value, key: &str) -> Result<&'a str, LoginError> {
    let value = payload
        .get(key)
        .and_then(Value::as_str)
        .ok_or(LoginError::Missing)?;
    let value = js_trim(value);
    if value.is_empty() {
        return Err(LoginError::Missing);
    }
    Ok(value)
}

fn check(value: &str) -> Result<(), LoginError> {
    if !value.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(LoginError::NotAlphanumeric);
    }
    if value.len() > MAX_NAME_LEN {
        return Err(LoginError::TooLong);
    }
    Ok(())
}

/// Validates a `login` payload of any JSON shape; gives the trimmed name and room.
pub fn validate_login(payload: &Value) -> Result<(String, String), LoginError> {
    let name = field(payload, "name")?;
    let room = field(payload, "room")?;
    check(name)?;
    check(room)?;
    Ok((name.to_owned(), room.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn login(v: Value) -> Result<(String, String), LoginError> {
        validate_login(&v)
    }

    #[test]
    fn malformed_payloads_are_missing() {
        for v in [
            Value::Null,
            json!(5),
            json!("x"),
            json!([]),
            json!({}),
            json!({"name": 5, "room": "r1"}),
            json!({"name": "juan"}),
            json!({"name": "", "room": "r1"}),
            json!({"name": "   ", "room": "r1"}),
            json!({"name": null, "room": "r1"}),
        ] {
            assert_eq!(login(v.clone()), Err(LoginError::Missing), "{v}");
        }
    }

    #[test]
    fn trims_both_ends_like_javascript() {
        for name in [
            " bob",
            "bob ",
            "  bob  ",
            "\tbob\n",
            "\u{a0}bob",
            "\u{feff}bob",
            "\u{3000}bob\u{2028}",
        ] {
            assert_eq!(
                login(json!({"name": name, "room": "r1"})),
                Ok(("bob".into(), "r1".into())),
                "{name:?}"
            );
        }
        // Not white space for JavaScript: they stay, and fail the character rule.
        for name in ["\u{85}bob", "\u{200b}bob"] {
            assert_eq!(
                login(json!({"name": name, "room": "r1"})),
                Err(LoginError::NotAlphanumeric)
            );
        }
    }

    #[test]
    fn character_and_length_rules() {
        for name in ["juan c", "<script>", "juan-c", "jüan"] {
            assert_eq!(
                login(json!({"name": name, "room": "r1"})),
                Err(LoginError::NotAlphanumeric)
            );
        }
        assert_eq!(
            login(json!({"name": "a".repeat(20), "room": "r1"})).map(|_| ()),
            Ok(())
        );
        assert_eq!(
            login(json!({"name": "a".repeat(21), "room": "r1"})),
            Err(LoginError::TooLong)
        );
        assert_eq!(
            login(json!({"name": "bob", "room": "R".repeat(21)})),
            Err(LoginError::TooLong)
        );
        assert_eq!(
            login(json!({"name": "bob", "room": "r 1"})),
            Err(LoginError::NotAlphanumeric)
        );
    }

    #[test]
    fn extra_keys_are_ignored() {
        assert_eq!(
            login(json!({"name": "Juan", "room": "R1", "admin": true})),
            Ok(("Juan".into(), "R1".into()))
        );
    }
}
