//! One pass over a JSON object's top-level members, validating as serde_json does.
//!
//! The `.json` fast path (logstores without JSON options) needs each top-level member's
//! name and the JSON text of its value, and whether that text is valid JSON. serde_json
//! finds that out with several passes per string (its `RawValue` walk, then a search for
//! escapes). This walk finds a string's end and whether it has escapes in one pass, and
//! accepts exactly what serde_json's walk over a value it ignores accepts:
//! - whitespace is space, tab, line feed and carriage return;
//! - a string may not hold a control character (below 0x20); an escape is one of
//!   `" \ / b f n r t`, or `u` and four hex digits (any code unit: serde_json does not check
//!   surrogates in a value it skips);
//! - a number is `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`;
//! - objects and arrays nest without a depth limit (serde_json walks them iteratively); the
//!   nesting stack is one byte per open bracket, so bounded by the input's length.
//!
//! Unescaping a name or a string value is left to serde_json (rare in logs).

/// The input is not a JSON object, or not valid JSON.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Invalid;

/// A top-level member: its name's JSON text (quotes included, escapes not decoded), whether
/// that has escapes, its value's JSON text, and whether the value is a string with escapes.
pub(crate) struct Member<'a> {
    pub name_json: &'a str,
    pub name_escaped: bool,
    pub value: &'a str,
    pub value_escaped: bool,
}

impl<'a> Member<'a> {
    /// The name's text between its quotes.
    pub(crate) fn name_inner(&self) -> &'a str {
        &self.name_json[1..self.name_json.len() - 1]
    }
}

/// Calls `each` for every top-level member of the object `json`, in order, then checks
/// that nothing but whitespace follows. Members before an error have been passed to
/// `each` already; an error from `each` stops the walk.
pub(crate) fn members<'a>(
    json: &'a str,
    stack: &mut Vec<u8>,
    mut each: impl FnMut(Member<'a>) -> Result<(), Invalid>,
) -> Result<(), Invalid> {
    let mut s = Scanner { b: json.as_bytes(), pos: 0 };
    s.ws();
    s.expect(b'{')?;
    s.ws();
    if s.peek() == Some(b'}') {
        s.pos += 1;
    } else {
        loop {
            s.expect(b'"')?;
            let start = s.pos - 1;
            let name_escaped = s.string_rest()?;
            let name_json = &json[start..s.pos];
            s.ws();
            s.expect(b':')?;
            s.ws();
            let start = s.pos;
            let value_escaped = s.value(stack)?;
            each(Member { name_json, name_escaped, value: &json[start..s.pos], value_escaped })?;
            s.ws();
            match s.next() {
                Some(b',') => s.ws(),
                Some(b'}') => break,
                _ => return Err(Invalid),
            }
        }
    }
    s.ws();
    if s.pos == s.b.len() { Ok(()) } else { Err(Invalid) }
}

/// Where the first `"`, `\\` or control character (below 0x20) of `b` is.
#[inline]
fn special(b: &[u8]) -> Option<usize> {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    /// The high bit of each byte below `n` (at most 0x80) is set, and possibly of bytes
    /// above the first such one (a borrow), never below it.
    #[inline]
    fn below(word: u64, n: u8) -> u64 {
        word.wrapping_sub(ONES * u64::from(n)) & !word & HIGHS
    }
    let mut at = 0;
    for chunk in b.chunks_exact(8) {
        let word = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
        // Bytes equal to a quote or a backslash become zero, so below 1; with the control
        // characters, the lowest flagged byte is the first special one.
        let hits = below(word, 0x20) | below(word ^ (ONES * u64::from(b'"')), 1) | below(word ^ (ONES * u64::from(b'\\')), 1);
        if hits != 0 {
            return Some(at + (hits.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    b[at..].iter().position(|&c| c == b'"' || c == b'\\' || c < 0x20).map(|i| at + i)
}

struct Scanner<'a> {
    b: &'a [u8],
    pos: usize,
}

impl Scanner<'_> {
    #[inline]
    fn peek(&self) -> Option<u8> {
        self.b.get(self.pos).copied()
    }

    #[inline]
    fn next(&mut self) -> Option<u8> {
        let c = self.peek()?;
        self.pos += 1;
        Some(c)
    }

    #[inline]
    fn expect(&mut self, c: u8) -> Result<(), Invalid> {
        if self.next() == Some(c) { Ok(()) } else { Err(Invalid) }
    }

    #[inline]
    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.pos += 1;
        }
    }

    /// After an opening quote: moves past the closing one; whether the string had escapes.
    #[inline]
    fn string_rest(&mut self) -> Result<bool, Invalid> {
        let mut escaped = false;
        loop {
            // The next quote, backslash or control character. Log strings are mostly
            // short (names, levels, hosts), so they are searched a word at a time in line
            // rather than by a call that pays off only on long ones.
            self.pos += special(&self.b[self.pos..]).ok_or(Invalid)?;
            match self.next() {
                Some(b'"') => return Ok(escaped),
                Some(b'\\') => {
                    escaped = true;
                    match self.next().ok_or(Invalid)? {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => {}
                        b'u' => {
                            let hex = self.b.get(self.pos..self.pos + 4).ok_or(Invalid)?;
                            if !hex.iter().all(u8::is_ascii_hexdigit) {
                                return Err(Invalid);
                            }
                            self.pos += 4;
                        }
                        _ => return Err(Invalid),
                    }
                }
                // A control character.
                _ => return Err(Invalid),
            }
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.pos;
        while let Some(b'0'..=b'9') = self.peek() {
            self.pos += 1;
        }
        self.pos - start
    }

    fn number(&mut self) -> Result<(), Invalid> {
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.next() {
            Some(b'0') => {}
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return Err(Invalid),
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            if self.digits() == 0 {
                return Err(Invalid);
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            if self.digits() == 0 {
                return Err(Invalid);
            }
        }
        Ok(())
    }

    fn literal(&mut self, word: &[u8]) -> Result<(), Invalid> {
        if self.b[self.pos..].starts_with(word) {
            self.pos += word.len();
            Ok(())
        } else {
            Err(Invalid)
        }
    }

    /// One value (not after a quote: from its first byte); whether it is a string with
    /// escapes. Objects and arrays are walked with `stack` holding the open brackets.
    fn value(&mut self, stack: &mut Vec<u8>) -> Result<bool, Invalid> {
        stack.clear();
        loop {
            // A scalar, or the opening of a container.
            match self.peek().ok_or(Invalid)? {
                b'"' => {
                    self.pos += 1;
                    let escaped = self.string_rest()?;
                    if stack.is_empty() {
                        return Ok(escaped);
                    }
                }
                b'-' | b'0'..=b'9' => self.number()?,
                b't' => self.literal(b"true")?,
                b'f' => self.literal(b"false")?,
                b'n' => self.literal(b"null")?,
                open @ (b'{' | b'[') => {
                    self.pos += 1;
                    self.ws();
                    let close = if open == b'{' { b'}' } else { b']' };
                    if self.peek() == Some(close) {
                        self.pos += 1;
                    } else {
                        stack.push(open);
                        if open == b'{' {
                            self.key()?;
                        }
                        continue;
                    }
                }
                _ => return Err(Invalid),
            }
            // After a value: close containers or go to the next element.
            loop {
                let Some(&open) = stack.last() else { return Ok(false) };
                self.ws();
                match (open, self.next()) {
                    (_, Some(b',')) => {
                        self.ws();
                        if open == b'{' {
                            self.key()?;
                        }
                        break;
                    }
                    (b'{', Some(b'}')) | (b'[', Some(b']')) => {
                        stack.pop();
                    }
                    _ => return Err(Invalid),
                }
            }
        }
    }

    /// An object member's name and colon, with the whitespace before its value.
    fn key(&mut self) -> Result<(), Invalid> {
        self.expect(b'"')?;
        self.string_rest()?;
        self.ws();
        self.expect(b':')?;
        self.ws();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde::de::{Deserializer, MapAccess, Visitor};
    use serde_json::value::RawValue;

    use super::*;

    /// serde_json's verdict and members, walked as the serde path walks them (names and
    /// values as raw text).
    fn reference(json: &str) -> Result<Vec<(String, String)>, ()> {
        struct Members;
        impl<'de> Visitor<'de> for Members {
            type Value = Vec<(String, String)>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
                let mut out = Vec::new();
                while let Some(name) = map.next_key::<&RawValue>()? {
                    let value: &RawValue = map.next_value()?;
                    out.push((name.get().to_string(), value.get().to_string()));
                }
                Ok(out)
            }
        }
        let mut de = serde_json::Deserializer::from_str(json);
        let out = de.deserialize_map(Members).and_then(|m| de.end().map(|()| m)).map_err(|_| ())?;
        // Names: the serde path decodes them; a name that does not decode fails the object.
        for (name, _) in &out {
            serde_json::from_str::<String>(name).map_err(|_| ())?;
        }
        Ok(out)
    }

    fn scanned(json: &str) -> Result<Vec<(String, String)>, ()> {
        let mut out = Vec::new();
        let mut stack = Vec::new();
        members(json, &mut stack, |m| {
            assert_eq!(m.name_escaped, m.name_inner().contains('\\'));
            assert_eq!(m.value_escaped, m.value.starts_with('"') && m.value.contains('\\'));
            out.push((m.name_json.to_string(), m.value.to_string()));
            Ok(())
        })
        .map_err(|_| ())?;
        for (name, _) in &out {
            serde_json::from_str::<String>(name).map_err(|_| ())?;
        }
        Ok(out)
    }

    #[track_caller]
    fn same(json: &str) {
        assert_eq!(scanned(json), reference(json), "{json:?}");
    }

    #[test]
    fn agrees_with_serde_json_on_chosen_inputs() {
        for json in [
            r#"{}"#, r#" { } "#, r#"{"a":1}"#, r#"{"a":"x","b":[1,2,{"c":null}],"d":{"e":{}}}"#,
            r#"{"a":-0.5e+10,"b":0,"c":-0,"d":1E5,"e":1.25}"#, r#"{"a":01}"#, r#"{"a":1.}"#,
            r#"{"a":.5}"#, r#"{"a":1e}"#, r#"{"a":-}"#, r#"{"a":+1}"#, r#"{"a":1,}"#, r#"{,}"#,
            r#"{"a" 1}"#, r#"{"a":1 "b":2}"#, r#"{"a":1}x"#, r#"{"a":1}{}"#, r#"[{"a":1}]"#, r#""a""#,
            r#"{"a":tru}"#, r#"{"a":true,"b":false,"c":null}"#, r#"{"a":nulll}"#, r#"{"a":[1,]}"#,
            r#"{"a":[,1]}"#, r#"{"a":{"b"}}"#, r#"{"a":{"b":1,}}"#, r#"{"a":[}"#, r#"{"a":{]}"#,
            r#"{"a\"b":"c\\d\/\b\f\n\r\t\u00e9"}"#, r#"{"a":"\x"}"#, r#"{"a":"\u12"}"#,
            r#"{"a":"\ud800"}"#, r#"{"\ud800":1}"#, r#"{"a":"é ü 日本"}"#, "{\"a\":\"\u{1}\"}",
            "{\"a\":\"tab\there\"}", "{\"a\":\"\u{7f}\"}", "{\t\"a\"\n:\r1 }", "{\u{c}\"a\":1}",
            r#"{"a":"unterminated}"#, r#"{"a":"x"#, r#"{"a""#, r#"{"a":"#, r#"{"#, "", "   ",
            r#"{"a":[[[[[]]]]],"b":[{"c":[{"d":[]}]}]}"#, r#"{"a":"x","a":"y"}"#, r#"{"a":1}  "#,
        ] {
            same(json);
        }
    }

    #[test]
    fn the_word_search_finds_the_first_quote_backslash_or_control_character() {
        let naive = |b: &[u8]| b.iter().position(|&c| c == b'"' || c == b'\\' || c < 0x20);
        // Every special byte at every position of strings around the word size, after
        // bytes that are just above a special one, high (UTF-8) bytes and zero.
        let fillers = [b'a', b'#', b'!', b' ', b']', b'\x7f', b'\x80', 0xe9, 0xff];
        for len in 0..40 {
            for &fill in &fillers {
                let plain = vec![fill; len];
                assert_eq!(special(&plain), naive(&plain), "{plain:?}");
                for at in 0..len {
                    for stop in [b'"', b'\\', 0x00, 0x01, 0x1f] {
                        let mut b = plain.clone();
                        b[at] = stop;
                        // A later special byte must not hide the first one.
                        if at + 1 < len {
                            b[len - 1] = 0x00;
                        }
                        assert_eq!(special(&b), naive(&b), "{b:?}");
                    }
                }
            }
        }
        let mut rng: u64 = 0x2545_F491_4F6C_DD1D;
        for _ in 0..20_000 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let b: Vec<u8> = rng.to_le_bytes().iter().chain(&(rng >> 3).to_le_bytes()).map(|&c| c | 0x18).collect();
            assert_eq!(special(&b), naive(&b), "{b:?}");
        }
    }

    #[test]
    fn deep_nesting_is_walked_like_serde_json() {
        let depth = 10_000;
        let json = format!("{{\"a\":{}{}}}", "[".repeat(depth), "]".repeat(depth));
        same(&json);
        let json = format!("{{\"a\":{}1{}}}", "{\"b\":".repeat(depth), "}".repeat(depth));
        same(&json);
        let json = format!("{{\"a\":{}{}}}", "[".repeat(depth), "]".repeat(depth - 1));
        same(&json);
    }

    #[test]
    fn agrees_with_serde_json_on_mutated_objects() {
        let seeds = [
            r#"{"ts":"2026-11-23T20:01:02.003Z","level":"INFO","n":-12.5e3,"ok":true,"tags":["a","b"],"m":{"x":null,"y":[1,{"z":"\u00e9\n"}]}}"#,
            r#"{"msg":"say \"hi\"\\ now","empty":"","zero":0,"arr":[],"obj":{}}"#,
        ];
        let alphabet = b"{}[]:,\"\\ \t\n0123456789-+.eEtrufalsn/bux\x01\x7f";
        let mut rng: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut accepted = 0;
        for round in 0..40_000 {
            let mut bytes = seeds[round % seeds.len()].as_bytes().to_vec();
            for _ in 0..1 + next() % 3 {
                let at = (next() as usize) % (bytes.len() + 1);
                let c = alphabet[(next() as usize) % alphabet.len()];
                match next() % 3 {
                    0 if at < bytes.len() => bytes[at] = c,
                    1 if at < bytes.len() => {
                        bytes.remove(at);
                    }
                    _ => bytes.insert(at, c),
                }
            }
            let Ok(json) = String::from_utf8(bytes) else { continue };
            if reference(&json).is_ok() {
                accepted += 1;
            }
            same(&json);
        }
        // The mutations must reach both verdicts for the comparison to mean anything.
        assert!(accepted > 1_000 && accepted < 39_000, "{accepted} accepted");
    }
}
