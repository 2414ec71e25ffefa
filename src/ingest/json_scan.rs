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
//! Strings are not searched byte by byte: the walk keeps a bit mask of the quotes,
//! backslashes and control characters of the 64 bytes ahead of it ([`specials`], with SSE2
//! 16 bytes at a time on x86-64), so a string's end is a count of trailing zeros, and the
//! bytes of the input are masked at most twice.
//!
//! Unescaping a name or a string value is left to serde_json (rare in logs).

/// The input is not a JSON object, or not valid JSON.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Invalid;

/// A top-level member: its name's JSON text (quotes included, escapes not decoded), whether
/// that has escapes, its value's JSON text, and whether the value is a string with escapes.
/// All are UTF-8, cut from the `str` walked at JSON token boundaries.
pub(crate) struct Member<'a> {
    pub name_json: &'a [u8],
    pub name_escaped: bool,
    pub value: &'a [u8],
    pub value_escaped: bool,
}

impl<'a> Member<'a> {
    /// The name's text between its quotes.
    pub(crate) fn name_inner(&self) -> &'a [u8] {
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
    let b = json.as_bytes();
    let mut s = Scanner::new(b);
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
            let name_json = &b[start..s.pos];
            s.ws();
            s.expect(b':')?;
            s.ws();
            let start = s.pos;
            let value_escaped = s.value(stack)?;
            each(Member { name_json, name_escaped, value: &b[start..s.pos], value_escaped })?;
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

/// Bytes one mask covers.
const BLOCK: usize = 64;

/// Bit `i` set where `b[i]` is a quote, a backslash or a control character (below 0x20),
/// for the first 64 bytes of `b` (a shorter `b` is taken as followed by zeros, which are
/// control characters).
#[inline]
fn specials(b: &[u8]) -> u64 {
    match b.first_chunk::<BLOCK>() {
        Some(block) => block_specials(block),
        None => {
            let mut block = [0u8; BLOCK];
            block[..b.len()].copy_from_slice(b);
            block_specials(&block)
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[inline]
fn block_specials(block: &[u8; BLOCK]) -> u64 {
    // SAFETY: SSE2 is part of x86-64 itself (every x86-64 CPU has it).
    unsafe { block_specials_sse2(block) }
}

/// [`block_specials`] 16 bytes at a time.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse2")]
fn block_specials_sse2(block: &[u8; BLOCK]) -> u64 {
    use std::arch::x86_64::{
        _mm_cmpeq_epi8, _mm_max_epu8, _mm_movemask_epi8, _mm_or_si128, _mm_set1_epi8, _mm_set_epi64x,
    };
    let quote = _mm_set1_epi8(b'"' as i8);
    let backslash = _mm_set1_epi8(b'\\' as i8);
    let control = _mm_set1_epi8(0x1f);
    let mut mask = 0u64;
    for (i, lane) in block.chunks_exact(16).enumerate() {
        let lo = u64::from_le_bytes(lane[..8].try_into().expect("8 bytes"));
        let hi = u64::from_le_bytes(lane[8..].try_into().expect("8 bytes"));
        let v = _mm_set_epi64x(hi as i64, lo as i64);
        // A byte is at most 0x1f when the larger of it and 0x1f is 0x1f (unsigned).
        let hits = _mm_or_si128(
            _mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, backslash)),
            _mm_cmpeq_epi8(_mm_max_epu8(v, control), control),
        );
        mask |= u64::from(_mm_movemask_epi8(hits) as u16) << (16 * i);
    }
    mask
}

#[cfg(not(target_arch = "x86_64"))]
#[inline]
fn block_specials(block: &[u8; BLOCK]) -> u64 {
    words_specials(block)
}

/// [`block_specials`] a 64-bit word at a time, for any target.
#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
#[inline]
fn words_specials(block: &[u8; BLOCK]) -> u64 {
    const LOW7: u64 = u64::from_ne_bytes([0x7f; 8]);
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    /// The high bit of each byte of `v` that is zero, and of no other byte (no borrow
    /// crosses bytes: a byte's low seven bits plus 0x7f stay within it).
    #[inline]
    fn zeros(v: u64) -> u64 {
        !(((v & LOW7).wrapping_add(LOW7)) | v | LOW7)
    }
    let mut mask = 0u64;
    for (i, chunk) in block.chunks_exact(8).enumerate() {
        let w = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
        let hits = zeros(w ^ (ONES * u64::from(b'"'))) | zeros(w ^ (ONES * u64::from(b'\\'))) | zeros(w & (ONES * 0xe0));
        // Byte k's high bit to bit 56 + k (the terms land on distinct bits: no carries),
        // then down to bit k.
        let bits = (hits >> 7).wrapping_mul(0x0102_0408_1020_4080) >> 56;
        mask |= bits << (8 * i);
    }
    mask
}

struct Scanner<'a> {
    b: &'a [u8],
    pos: usize,
    /// Where the bytes `specials` covers start (at most `pos`).
    block: usize,
    /// [`specials`] of `b[block..]`.
    specials: u64,
}

impl<'a> Scanner<'a> {
    fn new(b: &'a [u8]) -> Self {
        Self { b, pos: 0, block: 0, specials: specials(b) }
    }

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

    /// Where the first quote, backslash or control character at or after `pos` is, or the
    /// input's length when there is none.
    #[inline(always)]
    fn next_special(&mut self) -> usize {
        // `pos` never goes back before `block`.
        let offset = self.pos - self.block;
        if offset < BLOCK {
            let bits = self.specials >> offset;
            if bits != 0 {
                return self.pos + bits.trailing_zeros() as usize;
            }
        }
        self.next_special_ahead()
    }

    /// [`Self::next_special`] past the block masked so far: masks the blocks it passes,
    /// each starting where the last ended (the last one ends at the input's end, so it may
    /// start inside the one before), so no byte is masked more than twice.
    #[inline(never)]
    fn next_special_ahead(&mut self) -> usize {
        let len = self.b.len();
        let mut from = self.pos.max(self.block + BLOCK);
        while from < len {
            self.block = if from + BLOCK <= len || len < BLOCK { from } else { len - BLOCK };
            self.specials = specials(&self.b[self.block..]);
            let bits = self.specials >> (from - self.block);
            if bits != 0 {
                return from + bits.trailing_zeros() as usize;
            }
            from = self.block + BLOCK;
        }
        len
    }

    /// After an opening quote: moves past the closing one; whether the string had escapes.
    #[inline(always)]
    fn string_rest(&mut self) -> Result<bool, Invalid> {
        let mut escaped = false;
        loop {
            self.pos = self.next_special();
            match self.next() {
                Some(b'"') => return Ok(escaped),
                Some(b'\\') => {
                    escaped = true;
                    self.escape()?;
                }
                // A control character, or the end of the input.
                _ => return Err(Invalid),
            }
        }
    }

    /// After a backslash in a string: moves past the escape it starts.
    #[cold]
    #[inline(never)]
    fn escape(&mut self) -> Result<(), Invalid> {
        match self.next().ok_or(Invalid)? {
            b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => Ok(()),
            b'u' => {
                let hex = self.b.get(self.pos..self.pos + 4).ok_or(Invalid)?;
                if !hex.iter().all(u8::is_ascii_hexdigit) {
                    return Err(Invalid);
                }
                self.pos += 4;
                Ok(())
            }
            _ => Err(Invalid),
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
pub(crate) mod tests {
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
            assert_eq!(m.name_escaped, m.name_inner().contains(&b'\\'));
            assert_eq!(m.value_escaped, m.value.starts_with(b"\"") && m.value.contains(&b'\\'));
            let text = |b: &[u8]| String::from_utf8(b.to_vec()).unwrap();
            out.push((text(m.name_json), text(m.value)));
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
    fn the_masks_flag_every_quote_backslash_and_control_character() {
        let naive = |b: &[u8]| {
            (0..BLOCK).filter(|&i| b.get(i).is_none_or(|&c| c == b'"' || c == b'\\' || c < 0x20)).fold(0u64, |m, i| m | 1 << i)
        };
        // Every special byte at every position, among bytes just above a special one, high
        // (UTF-8) bytes and zero, in blocks cut short at every length.
        let fillers = [b'a', b'#', b'!', b' ', b']', b'\x7f', b'\x80', 0xe9, 0xff, 0x20, 0x1f];
        for &fill in &fillers {
            for len in 0..=BLOCK {
                let plain = vec![fill; len];
                assert_eq!(specials(&plain), naive(&plain), "{plain:?}");
            }
            for at in 0..BLOCK {
                for stop in [b'"', b'\\', 0x00, 0x01, 0x1f, b'!', b'#', b'[', b']'] {
                    let mut b = vec![fill; BLOCK];
                    b[at] = stop;
                    assert_eq!(specials(&b), naive(&b), "{b:?}");
                    let block: &[u8; BLOCK] = b[..].try_into().unwrap();
                    assert_eq!(words_specials(block), naive(&b), "{b:?}");
                }
            }
        }
        let mut rng: u64 = 0x2545_F491_4F6C_DD1D;
        for _ in 0..20_000 {
            let mut b = [0u8; BLOCK];
            for chunk in b.chunks_mut(8) {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                // Mostly near the special values.
                chunk.copy_from_slice(&(rng & 0x3f3f_3f3f_3f3f_3f3f | 0x1818_1818_1818_1818).to_le_bytes());
            }
            assert_eq!(specials(&b), naive(&b), "{b:?}");
            assert_eq!(words_specials(&b), naive(&b), "{b:?}");
            assert_eq!(specials(&b[..rng as usize % BLOCK]), naive(&b[..rng as usize % BLOCK]));
        }
    }

    #[test]
    fn strings_are_found_across_blocks() {
        // Strings that start, end and hold escapes on either side of the 64-byte masks.
        for pad in 0..130 {
            for len in [0, 1, 62, 63, 64, 65, 127, 128, 200] {
                let filler = "x".repeat(pad);
                let text = "y".repeat(len);
                same(&format!(r#"{{"{filler}":"{text}","b":"{text}\n{text}","c":[{{"d":"{text}"}}]}}"#));
                same(&format!(r#"{{"{filler}":"{text}"#));
                same(&format!("{{\"{filler}\":\"{text}\u{1}\"}}"));
            }
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
        let seeds = seeds.map(str::as_bytes);
        let mut accepted = 0;
        for bytes in mutations(&seeds, alphabet, 3, 40_000) {
            let Ok(json) = String::from_utf8(bytes) else { continue };
            if reference(&json).is_ok() {
                accepted += 1;
            }
            same(&json);
        }
        // The mutations must reach both verdicts for the comparison to mean anything.
        assert!(accepted > 1_000 && accepted < 39_000, "{accepted} accepted");
    }

/// `rounds` copies of `seeds` (in turn), each changed in 1 to `most` random places: a byte
/// of `alphabet` put in, or a byte replaced or removed (a fixed seed: the same every run).
pub(crate) fn mutations<'a>(seeds: &'a [&[u8]], alphabet: &'a [u8], most: u64, rounds: usize) -> impl Iterator<Item = Vec<u8>> + 'a {
    let mut rng: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    (0..rounds).map(move |round| {
        let mut bytes = seeds[round % seeds.len()].to_vec();
        for _ in 0..1 + next() % most {
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
        bytes
    })
}
}
