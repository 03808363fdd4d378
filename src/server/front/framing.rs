//! How the front door cuts the bytes of a connection into messages: the
//! client's requests (`Framer`: whole requests only, each checked before it
//! goes on) and the HTTP server's answers (`Answers`: counted, so the front
//! knows when a connection awaits nothing). Pure: bytes in, decisions out;
//! the `front` fuzz target drives `Framer` with arbitrary bytes.

use std::collections::VecDeque;

/// Why the front answered a request itself: the status and the reason.
#[derive(Debug, PartialEq, Eq)]
pub struct Refusal(pub u16, pub String);

impl Refusal {
    fn new(status: u16, why: impl Into<String>) -> Refusal {
        Refusal(status, why.into())
    }
}

/// What one `Framer::feed` lets through.
#[derive(Debug, Default)]
pub struct Framed {
    /// Whole requests (head and body), in order, for the HTTP server.
    pub forward: Vec<u8>,
    /// Per request in `forward`: whether it is a HEAD (its answer has no body).
    pub heads: Vec<bool>,
    /// The client waits for `100 Continue` before it sends the body.
    pub send_continue: bool,
}

/// Cuts a client's bytes into requests: a head of at most `max_header`
/// bytes (ASCII, an HTTP/1.x request line, well-formed header lines, no
/// `Upgrade`, no chunked body), then a body of its `Content-Length` (at most
/// `max_body`). A request goes on only once it is whole, so the HTTP
/// server never waits for a client.
pub struct Framer {
    max_header: usize,
    max_body: u64,
    /// The request being received: its head, then its body so far.
    request: Vec<u8>,
    /// Once the head is whole: the body bytes still to come.
    body_left: Option<u64>,
    /// Whether the request being received is a HEAD.
    is_head: bool,
}

/// A request head, checked.
struct Head {
    length: u64,
    is_head: bool,
    /// `Expect: 100-continue`: the front answers it (and drops the header).
    expects_continue: bool,
}

impl Framer {
    /// A framer for one connection.
    pub fn new(max_header: usize, max_body: u64) -> Framer {
        Framer {
            max_header,
            max_body,
            request: Vec::new(),
            body_left: None,
            is_head: false,
        }
    }

    /// Whether a request is partly received (blank lines between requests
    /// do not start one).
    pub fn in_request(&self) -> bool {
        !self.request.is_empty()
    }

    /// Takes bytes from the client; whole requests go to `out`. A refusal
    /// ends the connection.
    pub fn feed(&mut self, mut data: &[u8], out: &mut Framed) -> Result<(), Refusal> {
        while !data.is_empty() {
            if let Some(left) = self.body_left {
                let take = left.min(data.len() as u64) as usize;
                self.request.extend_from_slice(&data[..take]);
                data = &data[take..];
                self.body_left = Some(left - take as u64);
                if left == take as u64 {
                    self.finish(out);
                }
                continue;
            }
            // Skip the blank lines some clients send between requests.
            if self.request.is_empty() {
                let skip = data
                    .iter()
                    .take_while(|b| **b == b'\r' || **b == b'\n')
                    .count();
                data = &data[skip..];
                if data.is_empty() {
                    break;
                }
            }
            let before = self.request.len();
            let take = (self.max_header + 1 - before).min(data.len());
            self.request.extend_from_slice(&data[..take]);
            let search_from = before.saturating_sub(3);
            let end = self.request[search_from..]
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .map(|p| search_from + p + 4);
            let new = &self.request[before..end.unwrap_or(self.request.len())];
            if !new.is_ascii() {
                return Err(Refusal::new(
                    400,
                    "the request line and headers must be ASCII (found a byte above 0x7f)",
                ));
            }
            let Some(end) = end.filter(|e| *e <= self.max_header) else {
                if self.request.len() > self.max_header {
                    return Err(Refusal::new(
                        431,
                        format!(
                            "the request head is larger than {} bytes ([server] max_header)",
                            self.max_header
                        ),
                    ));
                }
                data = &data[take..];
                continue;
            };
            // What came after the head is body or the next request.
            let past = self.request.len() - end;
            self.request.truncate(end);
            data = &data[take - past..];
            let head = check_head(&mut self.request)?;
            if head.length > self.max_body {
                return Err(Refusal::new(
                    413,
                    format!(
                        "body of {} bytes is larger than the limit of {} bytes ([server] max_body)",
                        head.length, self.max_body
                    ),
                ));
            }
            self.is_head = head.is_head;
            if head.length == 0 {
                self.finish(out);
            } else {
                self.body_left = Some(head.length);
                out.send_continue |= head.expects_continue && data.is_empty();
            }
        }
        Ok(())
    }

    fn finish(&mut self, out: &mut Framed) {
        out.forward.append(&mut self.request);
        out.heads.push(self.is_head);
        self.body_left = None;
    }
}

/// Checks a whole request head (ASCII, ending in a blank line); drops an
/// `Expect: 100-continue` line from it (the front answers that itself).
fn check_head(head: &mut Vec<u8>) -> Result<Head, Refusal> {
    let text = std::str::from_utf8(&head[..head.len() - 4]).expect("checked ASCII");
    let mut lines = text.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.trim().split(' ');
    let (method, _target, version) = (parts.next(), parts.next(), parts.next());
    match version {
        Some("HTTP/1.1" | "HTTP/1.0") => {}
        Some(v) if v.starts_with("HTTP/") && !v.starts_with("HTTP/1.") => {
            return Err(Refusal::new(
                505,
                format!("heal speaks HTTP/1.1 only (got {v})"),
            ));
        }
        _ => {
            return Err(Refusal::new(
                400,
                "the request line must be \"METHOD /path HTTP/1.1\"",
            ))
        }
    }
    let is_head = method == Some("HEAD");
    let mut length: Option<u64> = None;
    let mut expects_continue = false;
    for line in lines {
        let Some((name, value)) = line.trim().split_once(':') else {
            return Err(Refusal::new(
                400,
                format!("a header line has no ':' (got {:?})", cut(line)),
            ));
        };
        if name.is_empty() || name.contains(|c: char| c.is_ascii_whitespace()) {
            return Err(Refusal::new(
                400,
                format!("bad header name {:?}", cut(name)),
            ));
        }
        let value = value.trim();
        if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(Refusal::new(
                411,
                "chunked request bodies are not accepted: send Content-Length",
            ));
        }
        if name.eq_ignore_ascii_case("upgrade")
            || (name.eq_ignore_ascii_case("connection")
                && value.to_ascii_lowercase().contains("upgrade"))
        {
            return Err(Refusal::new(
                400,
                "heal speaks HTTP/1.1 only: a request to Upgrade the connection is refused",
            ));
        }
        if name.eq_ignore_ascii_case("expect") {
            if !value.eq_ignore_ascii_case("100-continue") {
                return Err(Refusal::new(
                    417,
                    format!(
                        "Expect {:?} is not supported (only 100-continue)",
                        cut(value)
                    ),
                ));
            }
            expects_continue = true;
        }
        if name.eq_ignore_ascii_case("content-length") {
            let n = Some(value)
                .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or_else(|| Refusal::new(400, format!("bad Content-Length {:?}", cut(value))))?;
            if length.is_some_and(|l| l != n) {
                return Err(Refusal::new(400, "two different Content-Length headers"));
            }
            length = Some(n);
        }
    }
    if expects_continue {
        let is_expect = |l: &str| {
            l.trim()
                .split_once(':')
                .is_some_and(|(n, _)| n.eq_ignore_ascii_case("expect"))
        };
        let kept: Vec<&str> = text
            .split("\r\n")
            .enumerate()
            .filter(|(i, l)| *i == 0 || !is_expect(l))
            .map(|(_, l)| l)
            .collect();
        let kept = format!("{}\r\n\r\n", kept.join("\r\n"));
        *head = kept.into_bytes();
    }
    Ok(Head {
        length: length.unwrap_or(0),
        is_head,
        expects_continue,
    })
}

/// At most 64 characters of a client's text, for a refusal's message.
fn cut(s: &str) -> &str {
    &s[..s.len().min(64)]
}

/// Counts the HTTP server's answers on one connection: each final answer's
/// head, then its body (by `Content-Length`, chunks, or none for HEAD, 1xx,
/// 204 and 304). An answer it cannot frame counts as never ending, so the
/// connection stays "awaiting" until it closes.
#[derive(Debug, Default)]
pub struct Answers {
    state: Reading,
    /// The head, or the chunk-size or trailer line, being read.
    line: Vec<u8>,
}

#[derive(Debug, Default)]
enum Reading {
    #[default]
    Head,
    Body(u64),
    ChunkSize,
    ChunkData(u64),
    ChunkEnd(u8),
    Trailer,
    UntilClose,
}

/// Largest answer head or chunk line the front frames.
const MAX_ANSWER_LINE: usize = 64 << 10;

impl Answers {
    /// Takes bytes the HTTP server sent; returns how many answers they
    /// finished. `is_head` pops, per final answer, whether its request was a HEAD.
    pub fn feed(&mut self, mut data: &[u8], is_head: &mut dyn FnMut() -> bool) -> usize {
        let mut done = 0;
        while !data.is_empty() {
            match self.state {
                Reading::UntilClose => return done,
                Reading::Body(left) | Reading::ChunkData(left) => {
                    let take = left.min(data.len() as u64);
                    data = &data[take as usize..];
                    let left = left - take;
                    self.state = match (&self.state, left) {
                        (Reading::Body(_), l) => Reading::Body(l),
                        (_, 0) => Reading::ChunkEnd(2),
                        (_, l) => Reading::ChunkData(l),
                    };
                }
                Reading::ChunkEnd(left) => {
                    let take = (left as usize).min(data.len());
                    data = &data[take..];
                    self.state = match left as usize - take {
                        0 => Reading::ChunkSize,
                        l => Reading::ChunkEnd(l as u8),
                    };
                }
                Reading::Head | Reading::ChunkSize | Reading::Trailer => {
                    let ends = if matches!(self.state, Reading::Head) {
                        b"\r\n\r\n".as_slice()
                    } else {
                        b"\r\n".as_slice()
                    };
                    let before = self.line.len();
                    self.line.extend_from_slice(data);
                    let from = before.saturating_sub(ends.len() - 1);
                    let Some(end) = self.line[from..]
                        .windows(ends.len())
                        .position(|w| w == ends)
                        .map(|p| from + p + ends.len())
                    else {
                        if self.line.len() > MAX_ANSWER_LINE {
                            self.state = Reading::UntilClose;
                        }
                        return done;
                    };
                    data = &data[end - before..];
                    let line = std::mem::take(&mut self.line);
                    let line = &line[..end];
                    self.state = match self.state {
                        Reading::Head => answer_body(line, is_head),
                        Reading::ChunkSize => chunk_size(line),
                        // The blank line after the trailers ends a chunked answer.
                        _ if line == b"\r\n" => Reading::Body(0),
                        _ => Reading::Trailer,
                    };
                }
            }
            if let Reading::Body(0) = self.state {
                done += 1;
                self.state = Reading::Head;
            }
        }
        done
    }
}

/// What follows an answer's head (`Body(0)` when nothing does).
fn answer_body(head: &[u8], is_head: &mut dyn FnMut() -> bool) -> Reading {
    let text = String::from_utf8_lossy(head);
    let mut lines = text.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    if (100..200).contains(&status) && status != 101 {
        // An interim answer: the final one follows.
        return Reading::Head;
    }
    if is_head() || status == 204 || status == 304 {
        return Reading::Body(0);
    }
    let mut length = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let (name, value) = (name.trim(), value.trim());
        if name.eq_ignore_ascii_case("transfer-encoding")
            && value.to_ascii_lowercase().contains("chunked")
        {
            return Reading::ChunkSize;
        }
        if name.eq_ignore_ascii_case("content-length") {
            length = value.parse().ok();
        }
    }
    length.map_or(Reading::UntilClose, Reading::Body)
}

/// The state after a chunk-size line.
fn chunk_size(line: &[u8]) -> Reading {
    let text = String::from_utf8_lossy(line);
    let size = text.split(';').next().unwrap_or_default().trim();
    match u64::from_str_radix(size, 16) {
        Ok(0) => Reading::Trailer,
        Ok(n) => Reading::ChunkData(n),
        Err(_) => Reading::UntilClose,
    }
}

/// The HEAD flags of requests sent and not yet answered, oldest first.
pub type Pending = VecDeque<bool>;

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(f: &mut Framer, parts: &[&[u8]]) -> Result<Framed, Refusal> {
        let mut out = Framed::default();
        for p in parts {
            f.feed(p, &mut out)?;
        }
        Ok(out)
    }

    fn refusal(parts: &[&[u8]]) -> u16 {
        feed(&mut Framer::new(1024, 1 << 20), parts).unwrap_err().0
    }

    #[test]
    fn requests_pass_through_whole_however_they_are_cut() {
        let req = b"POST /a HTTP/1.1\r\nContent-Length: 5\r\n\r\nhelloHEAD /b HTTP/1.1\r\n\r\n";
        for cut in 0..req.len() {
            let mut f = Framer::new(1024, 1 << 20);
            let out = feed(&mut f, &[&req[..cut], &req[cut..]]).unwrap();
            assert_eq!(out.forward, req.to_vec(), "cut at {cut}");
            assert_eq!(out.heads, [false, true], "cut at {cut}");
            assert!(!f.in_request(), "cut at {cut}");
        }
    }

    #[test]
    fn a_request_goes_on_only_once_its_body_is_whole() {
        let mut f = Framer::new(1024, 1 << 20);
        let out = feed(
            &mut f,
            &[b"POST /a HTTP/1.1\r\nContent-Length: 5\r\n\r\nhel"],
        )
        .unwrap();
        assert!(out.forward.is_empty(), "nothing before the body is whole");
        assert!(f.in_request());
        let out = feed(&mut f, &[b"lo\r\n\r\n"]).unwrap();
        assert_eq!(
            out.forward,
            b"POST /a HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello".to_vec()
        );
        assert!(!f.in_request(), "blank lines after a request start none");
    }

    #[test]
    fn oversized_heads_chunked_bodies_and_bad_lengths_are_refused() {
        let mut f = Framer::new(64, 1 << 20);
        let big = format!("GET / HTTP/1.1\r\nX-Big: {}\r\n\r\n", "a".repeat(100));
        assert_eq!(feed(&mut f, &[big.as_bytes()]).unwrap_err().0, 431);
        let mut f = Framer::new(64, 1 << 20);
        let endless = "a".repeat(30);
        let e = feed(
            &mut f,
            &[
                b"GET / HTTP/1.1\r\nX: ",
                endless.as_bytes(),
                endless.as_bytes(),
            ],
        )
        .unwrap_err();
        assert_eq!(e.0, 431, "a head that never ends is cut at the limit");
        assert_eq!(
            refusal(&[b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"]),
            411
        );
        assert_eq!(
            refusal(&[b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"]),
            400
        );
        for bad in ["x", "+5", "-1", "5 5", "99999999999999999999999"] {
            let head = format!("POST / HTTP/1.1\r\nContent-Length: {bad}\r\n\r\n");
            assert_eq!(refusal(&[head.as_bytes()]), 400, "{bad}");
        }
        assert_eq!(refusal(&[b"GET / HTTP/1.1\r\nNo colon\r\n\r\n"]), 400);
        assert_eq!(refusal(&[b"GET / HTTP/1.1\r\nA b: c\r\n\r\n"]), 400);
        assert_eq!(refusal(&[b"GET / HTTP/1.1\r\nExpect: magic\r\n\r\n"]), 417);
    }

    #[test]
    fn a_body_over_max_body_is_refused_from_its_length() {
        let mut f = Framer::new(1024, 10);
        let e = feed(&mut f, &[b"POST / HTTP/1.1\r\nContent-Length: 11\r\n\r\n"]).unwrap_err();
        assert_eq!(e.0, 413, "{}", e.1);
        assert!(e.1.contains("max_body"), "{}", e.1);
        let mut f = Framer::new(1024, 10);
        assert!(feed(&mut f, &[b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\n"]).is_ok());
    }

    #[test]
    fn upgrades_non_ascii_heads_and_other_versions_are_refused() {
        assert_eq!(
            refusal(&[b"POST /login HTTP/1.1\r\nConnection: upgrade\r\n\r\n"]),
            400
        );
        assert_eq!(
            refusal(&[
                b"GET / HTTP/1.1\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n"
            ]),
            400
        );
        assert_eq!(refusal(&[b"GET / HTTP/1.1\r\nUpgrade: h2c\r\n\r\n"]), 400);
        // Refused as soon as the byte arrives, before the head is whole.
        assert_eq!(refusal(&[b"GET /\xff\xfe HTTP/1.1\r\n"]), 400);
        assert_eq!(refusal(&[b"GET / HTTP/1.1\r\nX: caf\xc3\xa9\r\n\r\n"]), 400);
        assert_eq!(refusal(&[b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"]), 505);
        assert_eq!(refusal(&[b"GET / HTTP/3\r\n\r\n"]), 505);
        assert_eq!(refusal(&[b"GET /\r\n\r\n"]), 400);
        assert_eq!(refusal(&[b"hello there\r\n\r\n"]), 400);
        let mut f = Framer::new(1024, 1 << 20);
        assert!(feed(
            &mut f,
            &[b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"]
        )
        .is_ok());
    }

    #[test]
    fn expect_continue_is_answered_by_the_front_and_dropped() {
        let mut f = Framer::new(1024, 1 << 20);
        let out = feed(
            &mut f,
            &[b"POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n"],
        )
        .unwrap();
        assert!(out.send_continue);
        let out = feed(&mut f, &[b"{}"]).unwrap();
        assert_eq!(
            out.forward,
            b"POST / HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}".to_vec()
        );
    }

    fn count(answers: &mut Answers, parts: &[&[u8]], heads: &[bool]) -> usize {
        let mut i = 0;
        let mut is_head = || {
            i += 1;
            heads.get(i - 1).copied().unwrap_or(false)
        };
        parts.iter().map(|p| answers.feed(p, &mut is_head)).sum()
    }

    #[test]
    fn answers_are_counted_however_they_are_cut() {
        let stream: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n\
            HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello\
            HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n0\r\nT: 1\r\n\r\n\
            HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n\
            HTTP/1.1 204 No Content\r\n\r\n";
        for cut in 0..stream.len() {
            let mut a = Answers::default();
            let n = count(
                &mut a,
                &[&stream[..cut], &stream[cut..]],
                &[false, false, true, false],
            );
            assert_eq!(n, 4, "cut at {cut}");
        }
        let mut a = Answers::default();
        let n = count(
            &mut a,
            &[b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhel"],
            &[false],
        );
        assert_eq!(n, 0, "an answer partly sent is not done");
        let mut a = Answers::default();
        let n = count(&mut a, &[b"HTTP/1.0 200 OK\r\n\r\nuntil the end"], &[false]);
        assert_eq!(n, 0, "an answer without a length never ends");
    }
}
