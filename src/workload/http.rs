//! The one HTTP/1.1 parser the echo workload and its client share: request and response heads and
//! chunked bodies through `httparse`, plus what meshfed reads from them (body framing, keep-alive,
//! the `x-forwarded-client-cert` header). Connections stay the callers' own: this module only reads
//! bytes they already have.
//!
//! Parsers work on borrowed bytes and return `Ok(None)` while a message is still incomplete, so a
//! connection can call them again after every read without copying.

use std::borrow::Cow;

use thiserror::Error;

/// Header the inbound sidecar sets to describe the client certificate it verified.
pub const XFCC_HEADER: &str = "x-forwarded-client-cert";

/// Header the inbound sidecar sets to the downstream peer address of the connection that carried
/// the request (the connection a passthrough gateway balanced).
pub const DOWNSTREAM_PEER_HEADER: &str = "x-meshfed-downstream-peer";

/// The largest request or response head accepted, in bytes.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;

/// Why bytes are not a valid HTTP/1.x message.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum HttpError {
    /// The head did not end within [`MAX_HEAD_BYTES`].
    #[error("message head is longer than {MAX_HEAD_BYTES} bytes")]
    HeadTooLarge,
    /// The request line or status line is not HTTP/1.0 or HTTP/1.1 syntax.
    #[error("malformed start line")]
    StartLine,
    /// A header line has no colon, a bad name, or is an obsolete folded continuation.
    #[error("malformed header line")]
    HeaderLine,
    /// More header fields than a workload message ever needs.
    #[error("more than {MAX_HEADERS} header fields")]
    TooManyHeaders,
    /// `Content-Length` is not a number, or repeated with different values.
    #[error("invalid Content-Length")]
    ContentLength,
    /// A transfer coding other than `chunked` last.
    #[error("unsupported Transfer-Encoding")]
    TransferEncoding,
    /// A chunked body with a bad chunk size, missing CRLF or malformed trailers.
    #[error("malformed chunked body")]
    Chunked,
}

/// How the body after a head is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyFraming {
    /// Exactly this many bytes (also `0` for "no body").
    Length(usize),
    /// `Transfer-Encoding: chunked`; see [`chunked_body`].
    Chunked,
    /// Everything until the peer closes (responses only).
    UntilClose,
}

/// The parts of a request head the echo workload needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestHead<'a> {
    /// Bytes of the head, including the blank line that ends it.
    pub head_len: usize,
    /// How the body is delimited.
    pub framing: BodyFraming,
    /// Whether the connection stays open after the reply (HTTP/1.1 unless `Connection: close`,
    /// HTTP/1.0 only with `Connection: keep-alive`).
    pub keep_alive: bool,
    /// All `x-forwarded-client-cert` values, joined with `,` when the header was repeated.
    pub xfcc: Option<Cow<'a, str>>,
    /// The `x-meshfed-downstream-peer` value.
    pub downstream_peer: Option<&'a str>,
}

/// The parts of a response head the client workload needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResponseHead {
    /// Bytes of the head, including the blank line that ends it.
    pub head_len: usize,
    /// The status code.
    pub status: u16,
    /// How the body is delimited.
    pub framing: BodyFraming,
    /// Whether the server keeps the connection open after this response.
    pub keep_alive: bool,
}

/// The most header fields (or trailer fields) one message may carry; more is [`HttpError::TooManyHeaders`].
const MAX_HEADERS: usize = 64;

fn trim_whitespace(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| !matches!(b, b' ' | b'\t'))
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !matches!(b, b' ' | b'\t'))
        .map_or(start, |i| i + 1);
    &bytes[start..end]
}

/// Whether a comma-separated header value (e.g. `Connection: keep-alive, Upgrade`) holds `token`.
fn has_token(value: &[u8], token: &str) -> bool {
    value
        .split(|&b| b == b',')
        .any(|item| trim_whitespace(item).eq_ignore_ascii_case(token.as_bytes()))
}

/// What httparse's verdict on a head means here: header-field errors are [`HttpError::HeaderLine`]
/// (or too many of them), anything about the method, target, version or status is
/// [`HttpError::StartLine`].
fn head_error(error: httparse::Error) -> HttpError {
    match error {
        httparse::Error::HeaderName | httparse::Error::HeaderValue => HttpError::HeaderLine,
        httparse::Error::TooManyHeaders => HttpError::TooManyHeaders,
        _ => HttpError::StartLine,
    }
}

/// A complete head's length, `None` while incomplete; either way bounded by [`MAX_HEAD_BYTES`].
fn bounded_head(buf: &[u8], status: httparse::Status<usize>) -> Result<Option<usize>, HttpError> {
    match status {
        httparse::Status::Complete(head_len) if head_len > MAX_HEAD_BYTES => Err(HttpError::HeadTooLarge),
        httparse::Status::Complete(head_len) => Ok(Some(head_len)),
        httparse::Status::Partial if buf.len() > MAX_HEAD_BYTES => Err(HttpError::HeadTooLarge),
        httparse::Status::Partial => Ok(None),
    }
}

/// Headers common to requests and responses, collected while walking a head.
#[derive(Default)]
struct FramingHeaders {
    content_length: Option<usize>,
    chunked: bool,
    connection_close: bool,
    connection_keep_alive: bool,
}

impl FramingHeaders {
    fn note(&mut self, name: &str, value: &[u8]) -> Result<(), HttpError> {
        if name.eq_ignore_ascii_case("content-length") {
            let length = std::str::from_utf8(value)
                .ok()
                .filter(|text| !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|text| text.parse::<usize>().ok())
                .ok_or(HttpError::ContentLength)?;
            if self.content_length.is_some_and(|seen| seen != length) {
                return Err(HttpError::ContentLength);
            }
            self.content_length = Some(length);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            let last = value
                .rsplit(|&b| b == b',')
                .next()
                .map(trim_whitespace)
                .unwrap_or_default();
            if !last.eq_ignore_ascii_case(b"chunked") {
                return Err(HttpError::TransferEncoding);
            }
            self.chunked = true;
        } else if name.eq_ignore_ascii_case("connection") {
            self.connection_close |= has_token(value, "close");
            self.connection_keep_alive |= has_token(value, "keep-alive");
        }
        Ok(())
    }

    fn keep_alive(&self, minor: u8) -> bool {
        if minor >= 1 {
            !self.connection_close
        } else {
            self.connection_keep_alive && !self.connection_close
        }
    }
}

/// Parses a request head at the start of `buf`; `Ok(None)` while it is incomplete.
///
/// Any method and target are accepted (the echo answers them all); only HTTP/1.0 and HTTP/1.1.
/// Empty lines before the request line are skipped (RFC 9112 §2.2).
pub fn parse_request_head(buf: &[u8]) -> Result<Option<RequestHead<'_>>, HttpError> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut fields);
    let status = request.parse(buf).map_err(head_error)?;
    let Some(head_len) = bounded_head(buf, status)? else {
        return Ok(None);
    };
    let minor = request.version.ok_or(HttpError::StartLine)?;

    let mut framing = FramingHeaders::default();
    let mut xfcc: Option<Cow<'_, str>> = None;
    let mut downstream_peer = None;
    for field in request.headers.iter() {
        let value = trim_whitespace(field.value);
        framing.note(field.name, value)?;
        if field.name.eq_ignore_ascii_case(XFCC_HEADER) {
            if let Ok(value) = std::str::from_utf8(value) {
                xfcc = Some(match xfcc.take() {
                    None => Cow::Borrowed(value),
                    Some(earlier) => Cow::Owned(format!("{earlier},{value}")),
                });
            }
        } else if field.name.eq_ignore_ascii_case(DOWNSTREAM_PEER_HEADER) {
            downstream_peer = std::str::from_utf8(value).ok();
        }
    }
    let body = if framing.chunked {
        BodyFraming::Chunked
    } else {
        BodyFraming::Length(framing.content_length.unwrap_or(0))
    };
    Ok(Some(RequestHead {
        head_len,
        framing: body,
        keep_alive: framing.keep_alive(minor),
        xfcc,
        downstream_peer,
    }))
}

/// Parses a response head at the start of `buf`; `Ok(None)` while it is incomplete.
pub fn parse_response_head(buf: &[u8]) -> Result<Option<ResponseHead>, HttpError> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut fields);
    let parsed = response.parse(buf).map_err(head_error)?;
    let Some(head_len) = bounded_head(buf, parsed)? else {
        return Ok(None);
    };
    let (Some(minor), Some(status)) = (response.version, response.code) else {
        return Err(HttpError::StartLine);
    };

    let mut framing = FramingHeaders::default();
    for field in response.headers.iter() {
        framing.note(field.name, trim_whitespace(field.value))?;
    }
    let mut keep_alive = framing.keep_alive(minor);
    let body = if (100..200).contains(&status) || status == 204 || status == 304 {
        BodyFraming::Length(0)
    } else if framing.chunked {
        BodyFraming::Chunked
    } else if let Some(length) = framing.content_length {
        BodyFraming::Length(length)
    } else {
        keep_alive = false;
        BodyFraming::UntilClose
    };
    Ok(Some(ResponseHead {
        head_len,
        status,
        framing: body,
        keep_alive,
    }))
}

/// Decodes a chunked body at the start of `buf` (the bytes after the head). Returns the bytes the
/// whole body takes (chunks, last chunk, trailers), or `Ok(None)` while it is incomplete. When
/// `decoded` is given it is cleared and receives the body's data.
pub fn chunked_body(buf: &[u8], mut decoded: Option<&mut Vec<u8>>) -> Result<Option<usize>, HttpError> {
    if let Some(out) = decoded.as_deref_mut() {
        out.clear();
    }
    let mut pos = 0;
    loop {
        let (size_line_len, size) = match httparse::parse_chunk_size(&buf[pos..]) {
            Ok(httparse::Status::Complete(parsed)) => parsed,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::InvalidChunkSize) => return Err(HttpError::Chunked),
        };
        let data_start = pos + size_line_len;
        if size == 0 {
            // Trailer fields, then the blank line.
            let mut trailers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            return match httparse::parse_headers(&buf[data_start..], &mut trailers) {
                Ok(httparse::Status::Complete((trailers_len, _))) => Ok(Some(data_start + trailers_len)),
                Ok(httparse::Status::Partial) => Ok(None),
                Err(_) => Err(HttpError::Chunked),
            };
        }
        let data_end = usize::try_from(size)
            .ok()
            .and_then(|size| data_start.checked_add(size))
            .filter(|end| *end <= MAX_CHUNK_END)
            .ok_or(HttpError::Chunked)?;
        if buf.len() < data_end + 2 {
            return Ok(None);
        }
        let after = match &buf[data_end..data_end + 2] {
            b"\r\n" => data_end + 2,
            [b'\n', _] => data_end + 1,
            _ => return Err(HttpError::Chunked),
        };
        if let Some(out) = decoded.as_deref_mut() {
            out.extend_from_slice(&buf[data_start..data_end]);
        }
        pos = after;
    }
}

/// Where a chunk may end at the latest: far beyond any reply a buffer holds, and far enough from
/// `usize::MAX` that adding the CRLF cannot overflow.
const MAX_CHUNK_END: usize = usize::MAX / 2;

/// Why an `x-forwarded-client-cert` value could not be parsed.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum XfccError {
    /// A `;`- or `,`-separated part has no `=`.
    #[error("x-forwarded-client-cert pair {0:?} has no '='")]
    MissingEquals(String),
    /// A double-quoted value does not end.
    #[error("x-forwarded-client-cert has an unterminated quoted value")]
    UnterminatedQuote,
}

/// One element of `x-forwarded-client-cert`: the `key=value` pairs one proxy added.
pub type XfccElement = Vec<(String, String)>;

/// Parses `x-forwarded-client-cert`: elements separated by `,`, `key=value` pairs by `;`, values
/// optionally double-quoted (inside quotes `,`, `;` and `=` are literal and `\"` is a quote).
///
/// ```
/// use meshfed::workload::http::parse_xfcc;
/// let elements = parse_xfcc(r#"By=spiffe://a;URI=spiffe://b,Subject="CN=x,O=y";URI=spiffe://c"#).unwrap();
/// assert_eq!(elements.len(), 2);
/// assert_eq!(elements[1][0], ("Subject".to_string(), "CN=x,O=y".to_string()));
/// ```
pub fn parse_xfcc(value: &str) -> Result<Vec<XfccElement>, XfccError> {
    let mut elements = Vec::new();
    let mut element: XfccElement = Vec::new();
    let mut key = String::new();
    let mut text = String::new();
    let mut in_value = false;
    let mut quoted = false;
    let mut chars = value.chars();

    /// Ends the pair being read; unquoted values lose trailing whitespace.
    fn finish_pair(
        element: &mut XfccElement,
        key: &mut String,
        text: &mut String,
        in_value: &mut bool,
        quoted: &mut bool,
    ) -> Result<(), XfccError> {
        if !*quoted {
            text.truncate(text.trim_end().len());
        }
        *quoted = false;
        if !*in_value {
            let stray = text.trim();
            if !stray.is_empty() {
                return Err(XfccError::MissingEquals(stray.to_string()));
            }
            text.clear();
            return Ok(());
        }
        element.push((std::mem::take(key).trim().to_string(), std::mem::take(text)));
        *in_value = false;
        Ok(())
    }

    while let Some(ch) = chars.next() {
        match ch {
            '"' if in_value && text.trim().is_empty() => {
                text.clear();
                quoted = true;
                loop {
                    match chars.next() {
                        None => return Err(XfccError::UnterminatedQuote),
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            None => return Err(XfccError::UnterminatedQuote),
                            Some(escaped) => text.push(escaped),
                        },
                        Some(other) => text.push(other),
                    }
                }
            }
            '=' if !in_value => {
                key = std::mem::take(&mut text);
                in_value = true;
            }
            ';' => finish_pair(&mut element, &mut key, &mut text, &mut in_value, &mut quoted)?,
            ',' => {
                finish_pair(&mut element, &mut key, &mut text, &mut in_value, &mut quoted)?;
                if !element.is_empty() {
                    elements.push(std::mem::take(&mut element));
                }
            }
            ' ' | '\t' if in_value && text.is_empty() => {}
            other => text.push(other),
        }
    }
    finish_pair(&mut element, &mut key, &mut text, &mut in_value, &mut quoted)?;
    if !element.is_empty() {
        elements.push(element);
    }
    Ok(elements)
}

/// The caller's identity in an `x-forwarded-client-cert` value: the `URI` of its last element
/// (the one the nearest sidecar added). `None` when the value does not parse or has no `URI` there.
pub fn xfcc_peer_identity(value: &str) -> Option<String> {
    let elements = parse_xfcc(value).ok()?;
    let last = elements.into_iter().next_back()?;
    last.into_iter()
        .find(|(key, _)| key.eq_ignore_ascii_case("URI"))
        .map(|(_, uri)| uri)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xfcc_identity_is_the_uri_of_the_last_element() {
        let value = "By=spiffe://cluster.local/ns/ns2/sa/bar;Hash=abc;URI=spiffe://cluster.local/ns/ns0/sa/edge,\
                     By=spiffe://cluster.local/ns/ns2/sa/bar;Hash=def;URI=spiffe://cluster.local/ns/ns1/sa/foo";
        assert_eq!(
            xfcc_peer_identity(value).as_deref(),
            Some("spiffe://cluster.local/ns/ns1/sa/foo")
        );
    }

    #[test]
    fn xfcc_quoted_values_keep_separators_and_escaped_quotes() {
        let value = r#"Hash=1;Subject="CN=foo,OU=a;b=c \"q\"";URI=spiffe://x/ns/a/sa/b"#;
        let elements = parse_xfcc(value).unwrap();
        assert_eq!(elements.len(), 1);
        assert_eq!(
            elements[0],
            vec![
                ("Hash".to_string(), "1".to_string()),
                ("Subject".to_string(), r#"CN=foo,OU=a;b=c "q""#.to_string()),
                ("URI".to_string(), "spiffe://x/ns/a/sa/b".to_string()),
            ]
        );
        assert_eq!(xfcc_peer_identity(value).as_deref(), Some("spiffe://x/ns/a/sa/b"));
    }

    #[test]
    fn xfcc_repeated_headers_joined_with_spaces_still_parse() {
        let value = "URI=spiffe://first , Hash=2; URI=spiffe://second";
        let elements = parse_xfcc(value).unwrap();
        assert_eq!(elements[0], vec![("URI".to_string(), "spiffe://first".to_string())]);
        assert_eq!(elements.len(), 2);
        assert_eq!(xfcc_peer_identity(value).as_deref(), Some("spiffe://second"));
    }

    #[test]
    fn xfcc_last_element_without_uri_has_no_identity() {
        assert_eq!(xfcc_peer_identity("URI=spiffe://a,Hash=1"), None);
        assert_eq!(xfcc_peer_identity(""), None);
    }

    #[test]
    fn xfcc_malformed_values_are_errors() {
        assert_eq!(
            parse_xfcc("Hash").unwrap_err(),
            XfccError::MissingEquals("Hash".to_string())
        );
        assert_eq!(
            parse_xfcc(r#"Subject="CN=x"#).unwrap_err(),
            XfccError::UnterminatedQuote
        );
        assert_eq!(xfcc_peer_identity(r#"URI="spiffe://a"#), None);
    }

    #[test]
    fn request_head_reads_framing_keep_alive_and_mesh_headers() {
        let raw = b"\r\nPOST /x HTTP/1.1\r\nHost: bar\r\nContent-Length: 5\r\nX-Forwarded-Client-Cert: URI=a\r\n\
                    x-forwarded-client-cert: URI=b\r\nX-Meshfed-Downstream-Peer: 10.0.0.1:4000\r\n\r\nhello";
        let head = parse_request_head(raw).unwrap().unwrap();
        assert_eq!(head.head_len, raw.len() - 5);
        assert_eq!(head.framing, BodyFraming::Length(5));
        assert!(head.keep_alive);
        assert_eq!(head.xfcc.as_deref(), Some("URI=a,URI=b"));
        assert_eq!(head.downstream_peer, Some("10.0.0.1:4000"));
    }

    #[test]
    fn request_head_incomplete_until_blank_line() {
        let raw = b"GET / HTTP/1.1\r\nHost: bar\r\n";
        assert_eq!(parse_request_head(raw).unwrap(), None);
        assert_eq!(parse_request_head(b"GET / HT").unwrap(), None);
    }

    #[test]
    fn request_connection_close_and_http10_end_keep_alive() {
        let close = parse_request_head(b"GET / HTTP/1.1\r\nConnection: Upgrade, close\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(!close.keep_alive);
        let old = parse_request_head(b"GET / HTTP/1.0\r\n\r\n").unwrap().unwrap();
        assert!(!old.keep_alive);
        let old_kept = parse_request_head(b"GET / HTTP/1.0\nConnection: keep-alive\n\n")
            .unwrap()
            .unwrap();
        assert!(old_kept.keep_alive);
    }

    #[test]
    fn malformed_requests_are_rejected() {
        assert_eq!(parse_request_head(b"GET /\r\n\r\n"), Err(HttpError::StartLine));
        assert_eq!(parse_request_head(b"PRI * HTTP/2.0\r\n\r\n"), Err(HttpError::StartLine));
        assert_eq!(
            parse_request_head(b"GET / HTTP/1.1\r\nNoColon\r\n\r\n"),
            Err(HttpError::HeaderLine)
        );
        assert_eq!(
            parse_request_head(b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n"),
            Err(HttpError::HeaderLine)
        );
        assert_eq!(
            parse_request_head(b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
            Err(HttpError::ContentLength)
        );
        let huge = vec![b'a'; MAX_HEAD_BYTES + 1];
        assert_eq!(parse_request_head(&huge), Err(HttpError::HeadTooLarge));
        let mut long_value = b"GET / HTTP/1.1\r\nX-Long: ".to_vec();
        long_value.extend(std::iter::repeat_n(b'v', MAX_HEAD_BYTES));
        long_value.extend_from_slice(b"\r\n\r\n");
        assert_eq!(parse_request_head(&long_value), Err(HttpError::HeadTooLarge));
        assert_eq!(
            parse_request_head(b"GET / HTTP/1.1\r\nX-A: 1\r\n folded\r\n\r\n"),
            Err(HttpError::HeaderLine)
        );
        let mut many = b"GET / HTTP/1.1\r\n".to_vec();
        for index in 0..=MAX_HEADERS {
            many.extend_from_slice(format!("X-{index}: 1\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(parse_request_head(&many), Err(HttpError::TooManyHeaders));
    }

    #[test]
    fn response_head_reads_status_and_framing() {
        let head = parse_response_head(b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(
            (head.status, head.framing, head.keep_alive),
            (200, BodyFraming::Length(12), true)
        );
        let chunked = parse_response_head(b"HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!((chunked.status, chunked.framing), (503, BodyFraming::Chunked));
        let until_close = parse_response_head(b"HTTP/1.0 200 OK\r\n\r\n").unwrap().unwrap();
        assert_eq!(
            (until_close.framing, until_close.keep_alive),
            (BodyFraming::UntilClose, false)
        );
        let no_content = parse_response_head(b"HTTP/1.1 204 No Content\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(no_content.framing, BodyFraming::Length(0));
        assert_eq!(
            parse_response_head(b"HTTP/1.1 2000 OK\r\n\r\n"),
            Err(HttpError::StartLine)
        );
        assert_eq!(parse_response_head(b"hello\n"), Err(HttpError::StartLine));
    }

    #[test]
    fn chunked_body_decodes_across_reads() {
        let raw = b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nTrailer: x\r\n\r\nNEXT";
        let mut decoded = Vec::new();
        for cut in 0..raw.len() - 4 {
            assert_eq!(
                chunked_body(&raw[..cut], Some(&mut decoded)).unwrap(),
                None,
                "cut at {cut}"
            );
        }
        assert_eq!(chunked_body(raw, Some(&mut decoded)).unwrap(), Some(raw.len() - 4));
        assert_eq!(decoded, b"hello world");
        assert_eq!(chunked_body(b"zz\r\n", None), Err(HttpError::Chunked));
        assert_eq!(chunked_body(b"2\r\nabX\r\n", None), Err(HttpError::Chunked));
        assert_eq!(chunked_body(b"fffffffffffffffff\r\n", None), Err(HttpError::Chunked));
        assert_eq!(
            chunked_body(b"0\r\nBad Trailer: x\r\n\r\n", None),
            Err(HttpError::Chunked)
        );
    }
}
