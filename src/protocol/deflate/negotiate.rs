//! The permessage-deflate handshake (RFC 7692, section 7.1): reading the client's
//! `Sec-WebSocket-Extensions` offers and choosing the first one the server can honour.
//!
//! The server always answers with `server_no_context_takeover` and `client_no_context_takeover`:
//! every message is compressed and inflated on its own, so one compressed frame can go to every
//! compressing recipient and one inflater per shard serves every connection
//! ([`super::compress`], [`super::rx`]). Pure: header values in, a decision out.

/// The largest LZ77 window (as `server_max_window_bits`) the compressor uses: miniz_oxide, the
/// `flate2` backend in the dependency tree, always compresses with a 32 KiB window.
pub const COMPRESSOR_WINDOW_BITS: u8 = 15;

/// An accepted offer: what the server promised the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Agreed {
    /// The client's `server_max_window_bits` (8..=15), 15 when it gave none. A compressed
    /// message may use back-references up to 2^bits bytes: the compressor's are up to 32 KiB,
    /// so a connection with a smaller window gets compressed frames only for messages no
    /// longer than 2^bits bytes (no back-reference can reach further than the message's own
    /// start) and plain frames otherwise, which RFC 7692 allows per message.
    pub server_window_bits: u8,
    /// Whether the offer named `server_max_window_bits` (then the answer must name it too).
    pub echo_server_window_bits: bool,
}

impl Agreed {
    /// The `Sec-WebSocket-Extensions` value of the `101` response.
    pub fn response(&self) -> String {
        let mut s = String::from(
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
        );
        if self.echo_server_window_bits {
            s.push_str("; server_max_window_bits=");
            s.push_str(&self.server_window_bits.to_string());
        }
        s
    }

    /// Whether a message of `len` payload bytes may go compressed to this connection (see
    /// [`Agreed::server_window_bits`]).
    pub fn fits_window(window_bits: u8, len: usize) -> bool {
        window_bits >= COMPRESSOR_WINDOW_BITS || len <= 1usize << window_bits
    }
}

/// A `Sec-WebSocket-Extensions` header that does not follow RFC 6455's grammar (section 9.1):
/// the upgrade is refused with 400.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed(pub &'static str);

/// One extension of an offer list, with its parameters (values unquoted).
#[derive(Debug, PartialEq, Eq)]
struct Extension<'a> {
    name: &'a str,
    params: Vec<(&'a str, Option<String>)>,
}

/// Chooses the first `permessage-deflate` offer the server can honour, over every
/// `Sec-WebSocket-Extensions` header `values` (in order, as RFC 7230 joins repeated headers).
/// Offers that are not valid for permessage-deflate (an unknown or repeated parameter, a bad
/// value) are declined as RFC 7692, section 7.1, says, and the next one is tried; `Ok(None)`:
/// none acceptable, the connection goes uncompressed.
pub fn negotiate<'a>(
    values: impl IntoIterator<Item = &'a str>,
) -> Result<Option<Agreed>, Malformed> {
    let mut chosen = None;
    for v in values {
        for ext in parse(v)? {
            if chosen.is_none() && ext.name.eq_ignore_ascii_case("permessage-deflate") {
                chosen = accept(&ext);
            }
        }
    }
    Ok(chosen)
}

/// The server's answer to one permessage-deflate offer.
fn accept(ext: &Extension<'_>) -> Option<Agreed> {
    let (mut snct, mut cnct, mut smwb, mut cmwb) = (false, false, None, false);
    for (name, value) in &ext.params {
        let seen = match name.to_ascii_lowercase().as_str() {
            "server_no_context_takeover" if value.is_none() => std::mem::replace(&mut snct, true),
            "client_no_context_takeover" if value.is_none() => std::mem::replace(&mut cnct, true),
            "server_max_window_bits" => {
                let bits = window_bits(value.as_deref()?)?;
                smwb.replace(bits).is_some()
            }
            "client_max_window_bits" => {
                // Any value (or none) is fine: the inflater's 32 KiB window reads them all.
                if let Some(v) = value {
                    window_bits(v)?;
                }
                std::mem::replace(&mut cmwb, true)
            }
            _ => return None, // unknown, or a value where none is allowed
        };
        if seen {
            return None; // a repeated parameter
        }
    }
    Some(Agreed {
        server_window_bits: smwb.unwrap_or(COMPRESSOR_WINDOW_BITS),
        echo_server_window_bits: smwb.is_some(),
    })
}

/// A window size parameter: 8 to 15, decimal, no leading zero (RFC 7692, section 7.1.2).
fn window_bits(v: &str) -> Option<u8> {
    match v.as_bytes() {
        [d @ b'8'..=b'9'] => Some(d - b'0'),
        [b'1', d @ b'0'..=b'5'] => Some(10 + d - b'0'),
        _ => None,
    }
}

/// RFC 7230 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A cursor over one header value.
struct Cursor<'a> {
    s: &'a str,
    at: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<u8> {
        self.s.as_bytes().get(self.at).copied()
    }

    fn skip_ows(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.at += 1;
        }
    }

    fn token(&mut self) -> Result<&'a str, Malformed> {
        let start = self.at;
        while self.peek().is_some_and(is_tchar) {
            self.at += 1;
        }
        if self.at == start {
            return Err(Malformed("expected a token in Sec-WebSocket-Extensions"));
        }
        Ok(&self.s[start..self.at])
    }

    /// A quoted-string (the opening quote is next), unescaped; it must hold a token.
    fn quoted(&mut self) -> Result<String, Malformed> {
        self.at += 1;
        let mut v = String::new();
        loop {
            match self.peek() {
                None => return Err(Malformed("unterminated quoted string")),
                Some(b'"') => {
                    self.at += 1;
                    break;
                }
                Some(b'\\') => {
                    self.at += 1;
                    match self.peek() {
                        Some(c) if is_tchar(c) => v.push(char::from(c)),
                        _ => return Err(Malformed("a quoted value must be a token")),
                    }
                    self.at += 1;
                }
                Some(c) if is_tchar(c) => {
                    v.push(char::from(c));
                    self.at += 1;
                }
                Some(_) => return Err(Malformed("a quoted value must be a token")),
            }
        }
        if v.is_empty() {
            return Err(Malformed("a quoted value must be a token"));
        }
        Ok(v)
    }
}

/// Parses one header value: `extension *( "," extension )`, empty list elements allowed
/// (RFC 7230, section 7), `extension = token *( ";" token [ "=" ( token / quoted-string ) ] )`.
fn parse(value: &str) -> Result<Vec<Extension<'_>>, Malformed> {
    let mut c = Cursor { s: value, at: 0 };
    let mut out = Vec::new();
    loop {
        c.skip_ows();
        match c.peek() {
            None => return Ok(out),
            Some(b',') => {
                c.at += 1;
                continue;
            }
            _ => {}
        }
        let name = c.token()?;
        let mut params = Vec::new();
        loop {
            c.skip_ows();
            match c.peek() {
                None | Some(b',') => break,
                Some(b';') => {
                    c.at += 1;
                    c.skip_ows();
                    let p = c.token()?;
                    c.skip_ows();
                    let mut v = None;
                    if c.peek() == Some(b'=') {
                        c.at += 1;
                        c.skip_ows();
                        v = Some(if c.peek() == Some(b'"') {
                            c.quoted()?
                        } else {
                            c.token()?.to_owned()
                        });
                    }
                    params.push((p, v));
                }
                Some(_) => {
                    return Err(Malformed(
                        "unexpected character in Sec-WebSocket-Extensions",
                    ))
                }
            }
        }
        // Bounded: each element consumed at least one byte of the header.
        out.push(Extension { name, params });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agree(values: &[&str]) -> Result<Option<Agreed>, Malformed> {
        negotiate(values.iter().copied())
    }

    const PLAIN: Agreed = Agreed {
        server_window_bits: 15,
        echo_server_window_bits: false,
    };

    #[test]
    fn a_bare_offer_is_accepted_with_both_no_context_takeovers() {
        let a = agree(&["permessage-deflate"]).unwrap().unwrap();
        assert_eq!(a, PLAIN);
        assert_eq!(
            a.response(),
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
        );
    }

    #[test]
    fn every_parameter_of_a_valid_offer_is_understood() {
        for offer in [
            "permessage-deflate; client_max_window_bits",
            "permessage-deflate; client_max_window_bits=10",
            "permessage-deflate; client_max_window_bits=\"8\"",
            "permessage-deflate;client_no_context_takeover;server_no_context_takeover",
            "PerMessage-Deflate ; Client_Max_Window_Bits",
        ] {
            assert_eq!(agree(&[offer]), Ok(Some(PLAIN)), "{offer}");
        }
        let a = agree(&["permessage-deflate; server_max_window_bits=9"])
            .unwrap()
            .unwrap();
        assert_eq!(a.server_window_bits, 9);
        assert!(a.response().ends_with("; server_max_window_bits=9"));
        let a = agree(&["permessage-deflate; server_max_window_bits=15"])
            .unwrap()
            .unwrap();
        assert_eq!(
            (a.server_window_bits, a.echo_server_window_bits),
            (15, true)
        );
    }

    #[test]
    fn invalid_offers_are_declined_and_the_next_one_taken() {
        for bad in [
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=7",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits=08",
            "permessage-deflate; client_max_window_bits=1",
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; client_max_window_bits; client_max_window_bits=9",
            "permessage-deflate; x_unknown",
        ] {
            assert_eq!(agree(&[bad]), Ok(None), "{bad}");
            let two = format!("{bad}, permessage-deflate; client_max_window_bits");
            assert_eq!(agree(&[&two]), Ok(Some(PLAIN)), "{two}");
            // The same across two header lines.
            assert_eq!(agree(&[bad, "permessage-deflate"]), Ok(Some(PLAIN)));
        }
    }

    #[test]
    fn the_first_acceptable_offer_wins_and_others_are_ignored() {
        let a = agree(&[
            "x-webkit-deflate-frame, permessage-deflate; server_max_window_bits=9; client_no_context_takeover, permessage-deflate",
        ])
        .unwrap()
        .unwrap();
        assert_eq!(a.server_window_bits, 9);
        assert_eq!(agree(&["x-webkit-deflate-frame", "foo; bar=baz"]), Ok(None));
        assert_eq!(agree(&[]), Ok(None));
        assert_eq!(agree(&[" , ,permessage-deflate ,"]), Ok(Some(PLAIN)));
    }

    #[test]
    fn malformed_headers_are_refused() {
        for bad in [
            "permessage-deflate; ",
            "permessage-deflate; =9",
            "permessage-deflate; server_max_window_bits=",
            "permessage-deflate; server_max_window_bits=\"9",
            "permessage-deflate; server_max_window_bits=\"9 \"",
            "permessage-deflate; server_max_window_bits=\"\"",
            "permessage deflate",
            "permessage-deflate; a=b c",
            "[permessage-deflate]",
            "permessage-deflate;;",
        ] {
            assert!(agree(&[bad]).is_err(), "{bad}");
        }
    }

    #[test]
    fn small_windows_take_only_messages_that_fit() {
        assert!(Agreed::fits_window(15, 10_000_000));
        assert!(Agreed::fits_window(9, 512));
        assert!(!Agreed::fits_window(9, 513));
        assert!(Agreed::fits_window(8, 256));
    }
}
