//! Plain-scalar resolution and scalar rendering with yaml.v3's rules (the YAML 1.2 core schema
//! as yaml.v3 implements it, plus its YAML 1.1 leftovers: `0777` octals, quoting of `yes`/`no`
//! and base-60-looking strings on output).
//!
//! This must not decide presentation beyond "may this string be written plain": styles are the
//! emitter's job.

use crate::sops::tree::Value;

/// The type a plain (unquoted, untagged) scalar resolves to.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Resolved {
    Null,
    Bool(bool),
    Int(i64),
    /// An integer above `i64::MAX` (yaml.v3 decodes it as `uint64`).
    Uint(u64),
    Float(f64),
    /// A timestamp, rendered as Go's RFC 3339 (nanosecond) text.
    Timestamp(String),
    Merge,
    Str,
}

/// Resolves a plain scalar exactly like yaml.v3's `resolve("", s)`.
pub(crate) fn resolve_plain(s: &str) -> Resolved {
    match s {
        "true" | "True" | "TRUE" => return Resolved::Bool(true),
        "false" | "False" | "FALSE" => return Resolved::Bool(false),
        "" | "~" | "null" | "Null" | "NULL" => return Resolved::Null,
        ".nan" | ".NaN" | ".NAN" => return Resolved::Float(f64::NAN),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
            return Resolved::Float(f64::INFINITY);
        }
        "-.inf" | "-.Inf" | "-.INF" => return Resolved::Float(f64::NEG_INFINITY),
        "<<" => return Resolved::Merge,
        _ => {}
    }
    let first = s.as_bytes()[0];
    match first {
        b'.' => {
            if let Some(f) = go_parse_float(s) {
                return Resolved::Float(f);
            }
        }
        b'0'..=b'9' | b'+' | b'-' => {
            if let Some(ts) = parse_timestamp(s) {
                return Resolved::Timestamp(ts);
            }
            let plain: String = s.chars().filter(|&c| c != '_').collect();
            if let Some(v) = go_parse_int_base0(&plain) {
                return int_resolved(v);
            }
            if is_yaml_style_float(&plain)
                && let Some(f) = go_parse_float(&plain)
            {
                return Resolved::Float(f);
            }
            for (prefix, radix, neg) in [
                ("0b", 2, false),
                ("-0b", 2, true),
                ("0o", 8, false),
                ("-0o", 8, true),
            ] {
                if let Some(rest) = plain.strip_prefix(prefix) {
                    if let Some(v) = parse_digits(rest, radix) {
                        let v = if neg { -v } else { v };
                        if let Some(r) = int_resolved_opt(v) {
                            return r;
                        }
                    }
                    break;
                }
            }
        }
        _ => {}
    }
    Resolved::Str
}

fn int_resolved(v: i128) -> Resolved {
    int_resolved_opt(v).unwrap_or(Resolved::Str)
}

fn int_resolved_opt(v: i128) -> Option<Resolved> {
    if let Ok(i) = i64::try_from(v) {
        Some(Resolved::Int(i))
    } else if let Ok(u) = u64::try_from(v) {
        Some(Resolved::Uint(u))
    } else {
        None
    }
}

fn parse_digits(s: &str, radix: u32) -> Option<i128> {
    if s.is_empty() || s.len() > 70 {
        return None;
    }
    let mut v: i128 = 0;
    for c in s.chars() {
        let d = c.to_digit(radix)?;
        v = v
            .checked_mul(i128::from(radix))?
            .checked_add(i128::from(d))?;
    }
    Some(v)
}

/// Go's `strconv.ParseInt(s, 0, 64)` (then `ParseUint` for the positive overflow), underscores
/// already removed. Returns the value if it fits i64 or u64.
fn go_parse_int_base0(s: &str) -> Option<i128> {
    let (neg, body) = match s.as_bytes().first()? {
        b'+' => (false, &s[1..]),
        b'-' => (true, &s[1..]),
        _ => (false, s),
    };
    let (radix, digits) =
        if let Some(r) = body.strip_prefix("0x").or_else(|| body.strip_prefix("0X")) {
            (16, r)
        } else if let Some(r) = body.strip_prefix("0o").or_else(|| body.strip_prefix("0O")) {
            (8, r)
        } else if let Some(r) = body.strip_prefix("0b").or_else(|| body.strip_prefix("0B")) {
            (2, r)
        } else if body.len() > 1 && body.starts_with('0') {
            (8, &body[1..])
        } else {
            (10, body)
        };
    let v = parse_digits(digits, radix)?;
    let v = if neg { -v } else { v };
    if neg {
        // ParseUint does not accept a sign, so negatives must fit i64.
        i64::try_from(v).ok().map(i128::from)
    } else if v <= i128::from(u64::MAX) {
        Some(v)
    } else {
        None
    }
}

/// `^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$`
fn is_yaml_style_float(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
        i += 1;
    }
    let digits = |i: &mut usize| {
        let st = *i;
        while *i < b.len() && b[*i].is_ascii_digit() {
            *i += 1;
        }
        *i - st
    };
    if i < b.len() && b[i] == b'.' {
        i += 1;
        if digits(&mut i) == 0 {
            return false;
        }
    } else {
        if digits(&mut i) == 0 {
            return false;
        }
        if i < b.len() && b[i] == b'.' {
            i += 1;
            digits(&mut i);
        }
    }
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        i += 1;
        if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
            i += 1;
        }
        if digits(&mut i) == 0 {
            return false;
        }
    }
    i == b.len()
}

/// Go's `strconv.ParseFloat(s, 64)` for the inputs yaml.v3 hands it: decimal floats (with
/// optional exponent), `inf`/`infinity`/`nan` spellings, and hex floats. Out-of-range values are
/// an error in Go (ErrRange) and therefore not floats.
pub(crate) fn go_parse_float(s: &str) -> Option<f64> {
    let lower = s.to_ascii_lowercase();
    let unsigned = lower.trim_start_matches(['+', '-']);
    if lower.len() - unsigned.len() > 1 {
        return None;
    }
    match unsigned {
        "inf" | "infinity" => {
            return Some(if lower.starts_with('-') {
                f64::NEG_INFINITY
            } else {
                f64::INFINITY
            });
        }
        "nan" => return Some(f64::NAN),
        _ => {}
    }
    if unsigned.starts_with("0x") {
        // Hex floats are legal Go but never produced by real configs; treat as not a float.
        return None;
    }
    if s.contains('_') || !is_yaml_style_float(s) {
        return None;
    }
    let f: f64 = s.parse().ok()?;
    if f.is_infinite() { None } else { Some(f) }
}

/// Go's `strconv.FormatFloat(f, 'g', -1, 64)` plus yaml.v3's `.inf`/`.nan` spellings.
pub(crate) fn format_float_yaml(f: f64) -> String {
    if f.is_nan() {
        return ".nan".into();
    }
    if f.is_infinite() {
        return if f > 0.0 {
            ".inf".into()
        } else {
            "-.inf".into()
        };
    }
    format_g(f, 'e')
}

/// Go's `FormatFloat(f, 'g' or 'G', -1, 64)` for finite `f`; `exp_char` is `e` or `E`.
pub(crate) fn format_g(f: f64, exp_char: char) -> String {
    let neg = f.is_sign_negative();
    let (digits, dp) = shortest_digits(f.abs());
    let nd = digits.len() as i64;
    let mut eprec: i64 = 6;
    if eprec > nd && nd >= dp {
        eprec = nd;
    }
    let exp = dp - 1;
    let mut out = String::new();
    if neg {
        out.push('-');
    }
    if exp < -4 || exp >= eprec {
        out.push_str(&digits[..1]);
        if nd > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        out.push(exp_char);
        out.push(if exp < 0 { '-' } else { '+' });
        let e = exp.unsigned_abs();
        if e < 10 {
            out.push('0');
        }
        out.push_str(&e.to_string());
    } else {
        out.push_str(&fixed_from_digits(&digits, dp));
    }
    out
}

/// Shortest round-trip decimal digits of a finite non-negative `f` and the decimal point
/// position (value = 0.DIGITS × 10^dp).
fn shortest_digits(f: f64) -> (String, i64) {
    if f == 0.0 {
        return ("0".into(), 1);
    }
    let sci = format!("{f:e}");
    let (mant, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i64 = exp.parse().unwrap_or(0);
    let digits: String = mant.chars().filter(|c| c.is_ascii_digit()).collect();
    (digits, exp + 1)
}

fn fixed_from_digits(digits: &str, dp: i64) -> String {
    let nd = digits.len() as i64;
    if dp <= 0 {
        format!("0.{}{}", "0".repeat((-dp) as usize), digits)
    } else if dp >= nd {
        format!("{}{}", digits, "0".repeat((dp - nd) as usize))
    } else {
        format!("{}.{}", &digits[..dp as usize], &digits[dp as usize..])
    }
}

/// `isBase60Float`: `^[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+(?:\.[0-9_]*)?$`
fn is_base60_float(s: &str) -> bool {
    let b = s.as_bytes();
    if b.is_empty() || !s.contains(':') {
        return false;
    }
    let mut i = 0;
    if b[0] == b'+' || b[0] == b'-' {
        i += 1;
    }
    if i >= b.len() || !b[i].is_ascii_digit() {
        return false;
    }
    i += 1;
    while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'_') {
        i += 1;
    }
    let mut groups = 0;
    while i < b.len() && b[i] == b':' {
        i += 1;
        let st = i;
        while i < b.len() && b[i].is_ascii_digit() && i - st < 2 {
            i += 1;
        }
        let n = i - st;
        if n == 0 || (n == 2 && b[st] > b'5') {
            // `[0-5]?[0-9]`: one digit, or two with the first in 0-5.
            if n == 2 && b[st] > b'5' {
                return false;
            }
            if n == 0 {
                return false;
            }
        }
        groups += 1;
    }
    if groups == 0 {
        return false;
    }
    if i < b.len() && b[i] == b'.' {
        i += 1;
        while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'_') {
            i += 1;
        }
    }
    i == b.len()
}

fn is_old_bool(s: &str) -> bool {
    matches!(
        s,
        "y" | "Y"
            | "yes"
            | "Yes"
            | "YES"
            | "on"
            | "On"
            | "ON"
            | "n"
            | "N"
            | "no"
            | "No"
            | "NO"
            | "off"
            | "Off"
            | "OFF"
    )
}

/// Whether yaml.v3's encoder would request the plain style for this string (it still falls
/// back to quoting in the emitter when plain is not allowed syntactically).
pub(crate) fn string_can_be_plain(s: &str) -> bool {
    resolve_plain(s) == Resolved::Str && !is_base60_float(s) && !is_old_bool(s)
}

/// Converts a resolved plain scalar to a tree value (`text` is the scalar's source text).
pub(crate) fn resolved_to_value(r: Resolved, text: &str) -> Value {
    match r {
        Resolved::Null => Value::Null,
        Resolved::Bool(b) => Value::Bool(b),
        Resolved::Int(i) => Value::Int(i),
        Resolved::Float(f) => Value::Float(f),
        Resolved::Timestamp(t) => Value::Time(t),
        Resolved::Uint(_) | Resolved::Merge | Resolved::Str => Value::str(text),
    }
}

/// yaml.v3's timestamp recognition (`parseTimestamp`): four digits and a dash first, then one of
/// `2006-1-2T15:4:5.999999999Z07:00` (also lower-case `t`), `2006-1-2 15:4:5.999999999` or
/// `2006-1-2`. Returns the time as Go's `Format(time.RFC3339Nano)` renders it.
pub(crate) fn parse_timestamp(s: &str) -> Option<String> {
    let b = s.as_bytes();
    if b.len() < 5 || !b[..4].iter().all(u8::is_ascii_digit) || b[4] != b'-' {
        return None;
    }
    let mut p = Cursor { b, i: 0 };
    let year = p.num(4, 4)?;
    p.lit(b'-')?;
    let month = p.num(1, 2)?;
    p.lit(b'-')?;
    let day = p.num(1, 2)?;
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    if p.done() {
        return Some(format!("{year:04}-{month:02}-{day:02}T00:00:00Z"));
    }
    let sep = p.next()?;
    let zoned = match sep {
        b'T' | b't' => true,
        b' ' => false,
        _ => return None,
    };
    let hour = p.num(1, 2)?;
    p.lit(b':')?;
    let min = p.num(1, 2)?;
    p.lit(b':')?;
    let sec = p.num(1, 2)?;
    if hour > 23 || min > 59 || sec > 59 {
        return None;
    }
    let mut frac = String::new();
    if p.peek() == Some(b'.') {
        p.i += 1;
        let st = p.i;
        while p.peek().is_some_and(|c| c.is_ascii_digit()) {
            p.i += 1;
        }
        if p.i == st || p.i - st > 9 {
            return None;
        }
        frac = s[st..p.i].trim_end_matches('0').to_string();
    }
    let zone = if zoned {
        match p.next()? {
            b'Z' => "Z".to_string(),
            c @ (b'+' | b'-') => {
                let zh = p.num(2, 2)?;
                p.lit(b':')?;
                let zm = p.num(2, 2)?;
                if zh > 24 || zm > 59 {
                    return None;
                }
                if zh == 0 && zm == 0 {
                    "Z".to_string()
                } else {
                    format!("{}{zh:02}:{zm:02}", c as char)
                }
            }
            _ => return None,
        }
    } else {
        "Z".to_string()
    };
    if !p.done() {
        return None;
    }
    let frac = if frac.is_empty() {
        String::new()
    } else {
        format!(".{frac}")
    };
    Some(format!(
        "{year:04}-{month:02}-{day:02}T{hour:02}:{min:02}:{sec:02}{frac}{zone}"
    ))
}

struct Cursor<'a> {
    b: &'a [u8],
    i: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }
    fn next(&mut self) -> Option<u8> {
        let c = self.peek()?;
        self.i += 1;
        Some(c)
    }
    fn done(&self) -> bool {
        self.i == self.b.len()
    }
    fn lit(&mut self, c: u8) -> Option<()> {
        (self.next()? == c).then_some(())
    }
    fn num(&mut self, min: usize, max: usize) -> Option<u32> {
        let st = self.i;
        while self.i - st < max && self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.i += 1;
        }
        if self.i - st < min {
            return None;
        }
        std::str::from_utf8(&self.b[st..self.i]).ok()?.parse().ok()
    }
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        2 if (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400) => {
            29
        }
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_like_yaml_v3() {
        assert_eq!(resolve_plain("0x1F"), Resolved::Int(31));
        assert_eq!(resolve_plain("0777"), Resolved::Int(511));
        assert_eq!(resolve_plain("1_000"), Resolved::Int(1000));
        assert_eq!(resolve_plain("08"), Resolved::Float(8.0));
        assert_eq!(resolve_plain("0o17"), Resolved::Int(15));
        assert_eq!(resolve_plain("-0b11"), Resolved::Int(-3));
        assert_eq!(resolve_plain("1e3"), Resolved::Float(1000.0));
        assert_eq!(resolve_plain("yes"), Resolved::Str);
        assert_eq!(resolve_plain("1.2.3"), Resolved::Str);
        assert_eq!(
            resolve_plain("18446744073709551615"),
            Resolved::Uint(u64::MAX)
        );
        assert_eq!(
            resolve_plain("2024-01-01"),
            Resolved::Timestamp("2024-01-01T00:00:00Z".into())
        );
        assert_eq!(
            resolve_plain("2024-1-2 3:04:05.50"),
            Resolved::Timestamp("2024-01-02T03:04:05.5Z".into())
        );
        assert_eq!(resolve_plain("2024-13-01"), Resolved::Str);
    }

    #[test]
    fn formats_like_go() {
        assert_eq!(format_float_yaml(1000.0), "1000");
        assert_eq!(format_float_yaml(1.0), "1");
        assert_eq!(format_float_yaml(1_000_000.0), "1e+06");
        assert_eq!(format_float_yaml(0.00001), "1e-05");
        assert_eq!(format_float_yaml(123456789.125), "1.23456789125e+08");
        assert_eq!(format_float_yaml(123456.0), "123456");
        assert_eq!(format_float_yaml(1.5), "1.5");
        assert_eq!(format_float_yaml(-0.0), "-0");
    }

    #[test]
    fn plain_rules() {
        assert!(!string_can_be_plain("yes"));
        assert!(!string_can_be_plain("12:30"));
        assert!(!string_can_be_plain("123"));
        assert!(!string_can_be_plain(""));
        assert!(string_can_be_plain("1.2.3"));
        assert!(string_can_be_plain("hello"));
    }
}
