//! Argument parsers (sizes, durations, headers) and the hex codec.

use std::time::Duration;

/// A byte size: `1000`, `64KiB`, `1MiB`, `2GiB`, `10kb`, `1.5MB` (KiB/MiB/GiB are powers of
/// 1024, KB/MB/GB of 1000; `K`/`M`/`G` alone mean the binary ones).
pub(crate) fn size(input: &str) -> Result<usize, String> {
    let s = input.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let number: f64 = number.parse().map_err(|_| format!("{input:?} is not a size (e.g. 1000, 64KiB, 1MiB)"))?;
    let multiplier: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kib" => 1024.0,
        "kb" => 1e3,
        "m" | "mib" => 1024.0 * 1024.0,
        "mb" => 1e6,
        "g" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "gb" => 1e9,
        other => return Err(format!("unknown size unit {other:?} in {input:?} (use B, KiB, MiB, GiB, KB, MB, GB)")),
    };
    let bytes = number * multiplier;
    if !bytes.is_finite() || bytes < 0.0 || bytes > usize::MAX as f64 || bytes.fract() != 0.0 {
        return Err(format!("{input:?} is not a whole number of bytes"));
    }
    Ok(bytes as usize)
}

/// A byte size or `off` (any case): a limit that can be switched off (`None`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SizeOrOff(pub(crate) Option<usize>);

/// [`size`], or `off` for none.
pub(crate) fn size_or_off(input: &str) -> Result<SizeOrOff, String> {
    if input.trim().eq_ignore_ascii_case("off") {
        return Ok(SizeOrOff(None));
    }
    size(input).map(|bytes| SizeOrOff(Some(bytes))).map_err(|e| format!("{e}, or off"))
}

/// A duration: `30s`, `500ms`, `2m`, `1h`, `250us`, `1.5s`; a bare number is seconds.
pub(crate) fn duration(input: &str) -> Result<Duration, String> {
    let s = input.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let number: f64 = number.parse().map_err(|_| format!("{input:?} is not a duration (e.g. 30s, 500ms, 2m)"))?;
    let seconds = match unit.trim() {
        "" | "s" | "sec" | "secs" => number,
        "ms" => number / 1e3,
        "us" | "µs" => number / 1e6,
        "m" | "min" | "mins" => number * 60.0,
        "h" => number * 3600.0,
        other => return Err(format!("unknown duration unit {other:?} in {input:?} (use us, ms, s, m, h)")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|_| format!("{input:?} is out of range"))
}

/// `on`/`off` (also `true`/`false`, `yes`/`no`, `1`/`0`).
pub(crate) fn on_off(input: &str) -> Result<bool, String> {
    match input.to_ascii_lowercase().as_str() {
        "on" | "true" | "yes" | "1" => Ok(true),
        "off" | "false" | "no" | "0" => Ok(false),
        _ => Err(format!("expected on or off, not {input:?}")),
    }
}

/// A `Name: value` header.
pub(crate) fn header(input: &str) -> Result<(String, String), String> {
    let (name, value) = input.split_once(':').ok_or_else(|| format!("expected \"Name: value\", not {input:?}"))?;
    let name = name.trim();
    if name.is_empty() || http::HeaderName::from_bytes(name.as_bytes()).is_err() {
        return Err(format!("invalid header name {name:?}"));
    }
    let value = value.trim();
    if http::HeaderValue::from_str(value).is_err() {
        return Err(format!("invalid value for header {name}"));
    }
    Ok((name.to_owned(), value.to_owned()))
}

/// Lower-case hex.
pub(crate) fn hex_encode(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 15)] as char);
    }
    out
}

/// Hex, either case, ignoring whitespace.
pub(crate) fn hex_decode(text: &str) -> Result<Vec<u8>, String> {
    let digits: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    if !digits.len().is_multiple_of(2) {
        return Err("hex input has an odd number of digits".to_owned());
    }
    let value = |d: u8| match d {
        b'0'..=b'9' => Ok(d - b'0'),
        b'a'..=b'f' => Ok(d - b'a' + 10),
        b'A'..=b'F' => Ok(d - b'A' + 10),
        _ => Err(format!("{:?} is not a hex digit", d as char)),
    };
    digits.chunks_exact(2).map(|pair| Ok(value(pair[0])? << 4 | value(pair[1])?)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(size("1000"), Ok(1000));
        assert_eq!(size("64KiB"), Ok(65536));
        assert_eq!(size("1MiB"), Ok(1 << 20));
        assert_eq!(size("1mb"), Ok(1_000_000));
        assert_eq!(size("1.5KiB"), Ok(1536));
        assert!(size("lots").is_err());
        assert!(size("1XB").is_err());
        assert!(size("-1").is_err());
        assert!(size("1e400").is_err());
    }

    #[test]
    fn sizes_or_off() {
        assert_eq!(size_or_off("off"), Ok(SizeOrOff(None)));
        assert_eq!(size_or_off("OFF"), Ok(SizeOrOff(None)));
        assert_eq!(size_or_off("1GiB"), Ok(SizeOrOff(Some(1 << 30))));
        assert_eq!(size_or_off("0"), Ok(SizeOrOff(Some(0))), "0 is a size, not off");
        assert!(size_or_off("no").is_err());
        assert!(size_or_off("1TB").unwrap_err().contains("or off"));
    }

    #[test]
    fn durations() {
        assert_eq!(duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(duration("3"), Ok(Duration::from_secs(3)));
        assert!(duration("soon").is_err());
        assert!(duration("1y").is_err());
    }

    #[test]
    fn hex_round_trip() {
        assert_eq!(hex_encode(b"\x00\xffhi"), "00ff6869");
        assert_eq!(hex_decode("00 FF 68 69"), Ok(b"\x00\xffhi".to_vec()));
        assert!(hex_decode("abc").is_err());
        assert!(hex_decode("zz").is_err());
    }

    #[test]
    fn headers() {
        assert_eq!(header("X-A: b c"), Ok(("X-A".to_owned(), "b c".to_owned())));
        assert!(header("nocolon").is_err());
        assert!(header("bad name: x").is_err());
    }
}
