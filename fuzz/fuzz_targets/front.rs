//! The front door's request framing (`server::front::framing`): any bytes a
//! client may send, whole, byte by byte and in pieces of 7, must frame the
//! same way (the same requests passed on, or the same refusal), and what is
//! passed on must frame again into itself. The answer counter takes the same
//! bytes for panics and hangs.
#![no_main]

use heal::server::front::framing::{Answers, Framed, Framer, Refusal};
use libfuzzer_sys::fuzz_target;

/// Small limits, so that inputs reach them.
const MAX_HEADER: usize = 1024;
const MAX_BODY: u64 = 4096;

/// What a framer made of `data` fed in pieces of `piece` bytes.
fn frame(data: &[u8], piece: usize) -> (Vec<u8>, Vec<bool>, Option<u16>, bool) {
    let mut framer = Framer::new(MAX_HEADER, MAX_BODY);
    let mut out = Framed::default();
    let mut refused = None;
    for chunk in data.chunks(piece.max(1)) {
        if let Err(Refusal(status, why)) = framer.feed(chunk, &mut out) {
            assert!((400..600).contains(&status), "{status} {why}");
            assert!(!why.is_empty());
            refused = Some(status);
            break;
        }
    }
    (out.forward, out.heads, refused, framer.in_request())
}

fuzz_target!(|data: &[u8]| heal_fuzz::on_server_stack(|| {
    let whole = frame(data, data.len());
    assert_eq!(whole, frame(data, 1), "byte by byte");
    assert_eq!(whole, frame(data, 7), "in pieces of 7");
    let (forward, heads, _, _) = &whole;
    let again = frame(forward, forward.len());
    assert_eq!(
        (&again.0, &again.1, again.2, again.3),
        (forward, heads, None, false),
        "what is passed on frames into itself"
    );
    let mut answers = Answers::default();
    let done = answers.feed(data, &mut || false);
    assert!(done <= data.len());
}));
