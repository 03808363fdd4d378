//! The TCP check: a connection opens in time.

use std::io::{self};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use super::{fail, millis, pass, timed_out, Outcome};

/// Ok when a connection to `addr` opens in time.
pub(super) fn run_tcp(addr: &str, timeout: Duration) -> Outcome {
    let start = Instant::now();
    match connect_any(addr, start + timeout) {
        Ok(_) => {
            let took = millis(start.elapsed());
            pass(format!("connected in {took} ms"), Some(took as f64))
        }
        Err(e) if e.kind() == io::ErrorKind::InvalidInput => fail(
            format!("cannot resolve {addr}: {e} (write \"host:port\")"),
            None,
        ),
        Err(e) => fail(
            format!("connect to {addr}: {}", describe_io(&e, timeout)),
            None,
        ),
    }
}

/// Connects to the first address of "host:port" that answers before the deadline.
/// Resolution failures come back as `InvalidInput`.
pub(super) fn connect_any(addr: &str, deadline: Instant) -> io::Result<TcpStream> {
    let addrs: Vec<_> = addr
        .to_socket_addrs()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?
        .collect();
    let mut last = io::Error::new(io::ErrorKind::InvalidInput, "no address found");
    for a in &addrs {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        match TcpStream::connect_timeout(a, left) {
            Ok(stream) => return Ok(stream),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// A short lowercase reason for an I/O failure.
pub(super) fn describe_io(e: &io::Error, timeout: Duration) -> String {
    match e.kind() {
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => timed_out(timeout),
        io::ErrorKind::ConnectionRefused => "connection refused".into(),
        io::ErrorKind::ConnectionReset => "connection reset".into(),
        io::ErrorKind::UnexpectedEof => "connection closed".into(),
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {

    use std::net::TcpListener;

    use crate::probe::testing::*;
    use crate::probe::*;

    #[test]
    fn tcp_open_port_is_ok() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let out = run(&Check::Tcp { addr }, TIMEOUT);
        assert!(out.ok, "{out:?}");
        assert!(out.detail.starts_with("connected in "), "{}", out.detail);
        assert!(out.value.is_some());
    }

    #[test]
    fn tcp_closed_port_fails() {
        let addr = format!("127.0.0.1:{}", closed_port());
        let out = run(&Check::Tcp { addr: addr.clone() }, TIMEOUT);
        assert!(!out.ok);
        assert_eq!(out.detail, format!("connect to {addr}: connection refused"));
    }

    #[test]
    fn tcp_bad_address_is_named() {
        let out = run(
            &Check::Tcp {
                addr: "no-port".into(),
            },
            TIMEOUT,
        );
        assert!(!out.ok);
        assert!(
            out.detail.starts_with("cannot resolve no-port: "),
            "{}",
            out.detail
        );
        assert!(out.detail.ends_with("(write \"host:port\")"));
    }
}
