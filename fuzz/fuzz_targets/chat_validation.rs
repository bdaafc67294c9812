//! The chat's login validation on arbitrary JSON (first byte even) or on arbitrary strings
//! placed into `name` and `room` (first byte odd; the two are split at the first NUL),
//! against a model written from the contract: JavaScript `trim`, then 1 to 20 ASCII letters
//! or digits.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};
use socketio_server::chat::validation::{LoginError, MAX_NAME_LEN, js_trim, validate_login};

/// JavaScript's WhiteSpace and LineTerminator: Unicode White_Space without U+0085, plus
/// U+FEFF.
fn js_space(c: char) -> bool {
    (c.is_whitespace() && c != '\u{85}') || c == '\u{feff}'
}

fn model_trim(s: &str) -> &str {
    let start = s.char_indices().find(|&(_, c)| !js_space(c)).map_or(s.len(), |(i, _)| i);
    let end = s
        .char_indices()
        .rev()
        .find(|&(_, c)| !js_space(c))
        .map_or(start, |(i, c)| i + c.len_utf8());
    &s[start..end.max(start)]
}

fn model_field<'a>(payload: &'a Value, key: &str) -> Option<&'a str> {
    let Value::Object(map) = payload else {
        return None;
    };
    let Some(Value::String(s)) = map.get(key) else {
        return None;
    };
    let t = model_trim(s);
    (!t.is_empty()).then_some(t)
}

fn model_check(s: &str) -> Result<(), LoginError> {
    if !s.chars().all(|c| c.is_ascii_alphanumeric()) {
        Err(LoginError::NotAlphanumeric)
    } else if s.chars().count() > MAX_NAME_LEN {
        Err(LoginError::TooLong)
    } else {
        Ok(())
    }
}

fn model(payload: &Value) -> Result<(String, String), LoginError> {
    let name = model_field(payload, "name").ok_or(LoginError::Missing)?;
    let room = model_field(payload, "room").ok_or(LoginError::Missing)?;
    model_check(name)?;
    model_check(room)?;
    Ok((name.to_owned(), room.to_owned()))
}

fn accepted(raw: &Value, out: &str) {
    let raw = raw.as_str().expect("accepted a field that is not a string");
    assert!(!out.is_empty() && out.len() <= MAX_NAME_LEN, "{out:?}");
    assert!(out.bytes().all(|b| b.is_ascii_alphanumeric()), "{out:?}");
    assert_eq!(out, js_trim(raw));
}

fn check(payload: &Value) {
    let got = validate_login(payload);
    assert_eq!(got, model(payload), "{payload}");
    if let Ok((name, room)) = &got {
        accepted(&payload["name"], name);
        accepted(&payload["room"], room);
    }
    if let Err(e) = got {
        assert!(matches!(
            e,
            LoginError::Missing | LoginError::NotAlphanumeric | LoginError::TooLong
        ));
        let _ = e.to_string();
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        if let Ok(payload) = serde_json::from_slice::<Value>(rest) {
            check(&payload);
        }
    } else {
        let text = String::from_utf8_lossy(rest);
        let (name, room) = text.split_once('\0').unwrap_or((&text, "r1"));
        assert_eq!(js_trim(name), model_trim(name));
        assert_eq!(js_trim(room), model_trim(room));
        check(&json!({ "name": name, "room": room }));
        check(&json!({ "room": room, "name": name, "extra": [name, room] }));
        check(&json!({ "name": name, "room": 5 }));
        check(&json!([name, room]));
    }
});
