//! Finds where a chunked body ends while its bytes pass through unchanged
//! (RFC 9112 §7.1): sizes, extensions, data, the last chunk and trailers.
//! Nothing is decoded or copied; the relay only needs to know when the
//! message is over, so that the connection can carry the next one.

/// Why a chunked body cannot be followed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadChunk(pub &'static str);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// In a chunk-size line's hex digits (`digits`: how many so far).
    Size { digits: u8 },
    /// Blanks after the size.
    SizeBlank,
    /// In a chunk extension, up to the line's end.
    Extension,
    /// After the size line's CR.
    SizeLf,
    /// In chunk data.
    Data,
    /// After chunk data: its CR.
    DataCr,
    /// After chunk data: its LF.
    DataLf,
    /// At the start of a trailer line (or the final empty line).
    TrailerStart,
    /// In a trailer field line.
    Trailer,
    /// After a trailer line's CR.
    TrailerLf,
    /// After the final empty line's CR.
    EndLf,
    /// The body is over.
    Done,
}

/// Follows one chunked body.
#[derive(Debug, Clone)]
pub struct Chunked {
    state: State,
    remaining: u64,
}

impl Default for Chunked {
    fn default() -> Self {
        Chunked {
            state: State::Size { digits: 0 },
            remaining: 0,
        }
    }
}

/// Hex digits allowed in a chunk size (16 = 2^64, more would overflow).
const MAX_DIGITS: u8 = 15;

impl Chunked {
    /// Takes the next bytes of the body. `Ok(Some(n))`: the body ends after
    /// the first `n` of them (the rest belongs to whatever follows);
    /// `Ok(None)`: all of them are body and more is to come.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Option<usize>, BadChunk> {
        let mut i = 0;
        while i < bytes.len() {
            if self.state == State::Data {
                let take = self.remaining.min((bytes.len() - i) as u64);
                self.remaining -= take;
                i += take as usize;
                if self.remaining == 0 {
                    self.state = State::DataCr;
                }
                continue;
            }
            let b = bytes[i];
            i += 1;
            self.state = self.step(b)?;
            if self.state == State::Done {
                return Ok(Some(i));
            }
        }
        Ok(None)
    }

    /// True once the final CRLF has been seen.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    fn end_of_size_line(&self) -> State {
        if self.remaining == 0 {
            State::TrailerStart
        } else {
            State::Data
        }
    }

    fn step(&mut self, b: u8) -> Result<State, BadChunk> {
        use State::*;
        Ok(match (self.state, b) {
            (Size { digits }, _) if b.is_ascii_hexdigit() => {
                if digits >= MAX_DIGITS {
                    return Err(BadChunk("chunk size too large"));
                }
                let d = (b as char).to_digit(16).unwrap_or(0) as u64;
                self.remaining = self.remaining * 16 + d;
                Size { digits: digits + 1 }
            }
            (Size { digits: 0 }, _) => return Err(BadChunk("chunk size is not hex")),
            (Size { .. } | SizeBlank, b' ' | b'\t') => SizeBlank,
            (Size { .. } | SizeBlank, b';') => Extension,
            (Size { .. } | SizeBlank | Extension, b'\r') => SizeLf,
            (Size { .. } | SizeBlank | Extension | SizeLf, b'\n') => self.end_of_size_line(),
            (Extension, _) => Extension,
            (Size { .. } | SizeBlank, _) => return Err(BadChunk("bad character in chunk size")),
            (SizeLf, _) => return Err(BadChunk("CR without LF after chunk size")),
            (DataCr, b'\r') => DataLf,
            (DataCr | DataLf, b'\n') => {
                self.remaining = 0;
                Size { digits: 0 }
            }
            (DataCr | DataLf, _) => return Err(BadChunk("chunk data longer than its size")),
            (TrailerStart, b'\r') => EndLf,
            (TrailerStart | EndLf, b'\n') => Done,
            (EndLf, _) => return Err(BadChunk("CR without LF at the end of the body")),
            (Trailer, b'\r') => TrailerLf,
            (Trailer | TrailerLf, b'\n') => TrailerStart,
            (TrailerStart | Trailer, _) => Trailer,
            (TrailerLf, _) => return Err(BadChunk("CR without LF in a trailer")),
            (Data | Done, _) => self.state,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn end_of(body: &[u8]) -> Result<Option<usize>, BadChunk> {
        Chunked::default().feed(body)
    }

    #[test]
    fn finds_the_end_of_bodies() {
        assert_eq!(end_of(b"0\r\n\r\n"), Ok(Some(5)));
        assert_eq!(end_of(b"5\r\nhello\r\n0\r\n\r\nNEXT"), Ok(Some(15)));
        assert_eq!(end_of(b"A;ext=1\r\n0123456789\r\n0\r\n\r\n"), Ok(Some(26)));
        assert_eq!(end_of(b"3 \r\nabc\r\n0\r\nX-T: 1\r\n\r\n"), Ok(Some(22)));
        // Bare LF line ends are tolerated, as by most parsers.
        assert_eq!(end_of(b"2\nab\n0\n\n"), Ok(Some(8)));
        assert_eq!(end_of(b"ff\r\n"), Ok(None));
    }

    #[test]
    fn any_split_gives_the_same_end() {
        let body =
            b"4\r\nwiki\r\n5;x=\"y\"\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nA: b\r\n\r\nrest";
        let whole = end_of(body).unwrap().unwrap();
        assert_eq!(&body[whole..], b"rest");
        for cut in 0..body.len() {
            let mut c = Chunked::default();
            let first = c.feed(&body[..cut]).unwrap();
            let end = match first {
                Some(n) => n,
                None => cut + c.feed(&body[cut..]).unwrap().unwrap(),
            };
            assert_eq!(end, whole, "cut at {cut}");
            assert!(c.is_done());
        }
        // Byte by byte too.
        let mut c = Chunked::default();
        let mut end = None;
        for (i, b) in body.iter().enumerate() {
            if let Some(1) = c.feed(std::slice::from_ref(b)).unwrap() {
                end = Some(i + 1);
                break;
            }
        }
        assert_eq!(end, Some(whole));
    }

    #[test]
    fn malformed_bodies_are_refused() {
        for bad in [
            &b"x\r\n"[..],
            b"\r\n",
            b"5\r\nhello!\r\n",
            b"1\rx",
            b"0\r\n\rx",
            b"fffffffffffffffff\r\n",
            b"1 2\r\n",
        ] {
            assert!(end_of(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }
}
