//! Small textual forms: shell-like word splitting for string commands, and
//! Go-style durations (`1m30s`) for health checks.

/// Splits a command line into words as a POSIX shell would, without
/// expanding anything: blanks separate words; `'...'` is literal; in
/// `"..."` a backslash escapes only `"`, `\`, `$`, `` ` `` and a newline;
/// elsewhere it escapes any character, and `\` + newline joins lines.
/// `$VAR`, `|`, `;` and the rest are passed through as text.
pub(super) fn split(line: &str) -> Result<Vec<String>, &'static str> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' | '\n' | '\r' => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err("unterminated single quote"),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => word.push(c),
                            Some('\n') => {}
                            Some(c) => {
                                word.push('\\');
                                word.push(c);
                            }
                            None => return Err("unterminated double quote"),
                        },
                        Some(c) => word.push(c),
                        None => return Err("unterminated double quote"),
                    }
                }
            }
            '\\' => match chars.next() {
                Some('\n') => {}
                Some(c) => {
                    in_word = true;
                    word.push(c);
                }
                None => return Err("a backslash at the end escapes nothing"),
            },
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

/// Parses a duration as Go writes it (`1s`, `500ms`, `1m30s`, `1.5s`;
/// units `h`, `m`, `s`, `ms`, `us`/`µs`, `ns`) into whole milliseconds,
/// rounded up.
pub(super) fn duration_ms(s: &str) -> Result<u64, &'static str> {
    const BAD: &str = "expected a duration like 1s, 500ms or 1m30s";
    let mut rest = s.trim();
    if rest.is_empty() {
        return Err(BAD);
    }
    let mut total_ns: u128 = 0;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .ok_or(BAD)?;
        let (number, tail) = rest.split_at(digits);
        let units = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(units);
        let unit_ns: u128 = match unit {
            "h" => 3_600_000_000_000,
            "m" => 60_000_000_000,
            "s" => 1_000_000_000,
            "ms" => 1_000_000,
            "us" | "µs" => 1_000,
            "ns" => 1,
            _ => return Err(BAD),
        };
        let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
        if (whole.is_empty() && frac.is_empty()) || frac.contains('.') {
            return Err(BAD);
        }
        // Digits past the 12th of a fraction are below a nanosecond of a
        // minute; ignoring them keeps the arithmetic in range.
        let frac = &frac[..frac.len().min(12)];
        let whole: u128 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| "the duration is too long")?
        };
        let frac_ns = if frac.is_empty() {
            0
        } else {
            let digits: u128 = frac.parse().map_err(|_| BAD)?;
            digits * unit_ns / 10u128.pow(frac.len() as u32)
        };
        total_ns = whole
            .checked_mul(unit_ns)
            .and_then(|n| n.checked_add(frac_ns))
            .and_then(|n| n.checked_add(total_ns))
            .ok_or("the duration is too long")?;
        rest = tail;
    }
    let ms = total_ns.div_ceil(1_000_000);
    match u64::try_from(ms) {
        Ok(0) => Err("the duration must be at least 1ms"),
        Ok(ms) => Ok(ms),
        Err(_) => Err("the duration is too long"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_split_like_a_shell() {
        let w = split(r#"sh -c 'echo "$HOME"; ls' a\ b "x\"y" ''"#).unwrap();
        assert_eq!(w, ["sh", "-c", r#"echo "$HOME"; ls"#, "a b", "x\"y", ""]);
        assert_eq!(split("  a \\\n b\t").unwrap(), ["a", "b"]);
        assert_eq!(split(r#""a\nb""#).unwrap(), ["a\\nb"]);
        assert!(split("").unwrap().is_empty());
        for bad in ["'open", "\"open", "end\\", "\"a\\"] {
            assert!(split(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations_like_go() {
        for (s, ms) in [
            ("1s", 1000),
            ("500ms", 500),
            ("1m30s", 90_000),
            ("1.5s", 1500),
            ("1h", 3_600_000),
            ("1500us", 2),
            ("1ns", 1),
            (".5s", 500),
        ] {
            assert_eq!(duration_ms(s), Ok(ms), "{s}");
        }
        for bad in [
            "",
            "1",
            "s",
            "1x",
            "1.2.3s",
            "0s",
            "-1s",
            ".s",
            "99999999999999999999999h",
        ] {
            assert!(duration_ms(bad).is_err(), "{bad}");
        }
    }
}
