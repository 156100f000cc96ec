//! W3C trace context (<https://www.w3.org/TR/trace-context/>): the trace an
//! operation belongs to, and the span of the call that made each change. An
//! operation outlives the request that started it; keeping the request's
//! context on the operation lets every later call join the same trace.

use std::fmt;

/// The longest `tracestate` kept; W3C asks vendors to propagate at least 512
/// characters, and a longer one is dropped rather than cut mid-entry.
pub const MAX_TRACE_STATE_LEN: usize = 512;

/// A trace and one span in it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SpanRef {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
}

impl SpanRef {
    /// Both ids non-zero, as W3C requires of a valid context.
    pub fn new(trace_id: [u8; 16], span_id: [u8; 8]) -> Option<Self> {
        (trace_id != [0; 16] && span_id != [0; 8]).then_some(Self { trace_id, span_id })
    }

    pub fn trace_id_hex(&self) -> String {
        hex(&self.trace_id)
    }

    pub fn span_id_hex(&self) -> String {
        hex(&self.span_id)
    }

    /// From the lowercase hex forms (32 and 16 digits), as logs and the API print them.
    pub fn from_hex(trace_id: &str, span_id: &str) -> Option<Self> {
        Self::new(unhex(trace_id)?, unhex(span_id)?)
    }
}

impl fmt::Debug for SpanRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.trace_id_hex(), self.span_id_hex())
    }
}

/// A span and what travels with it: the sampling flag and the vendors'
/// `tracestate`.
#[derive(Clone, PartialEq, Eq)]
pub struct TraceContext {
    pub span: SpanRef,
    /// The `trace-flags` byte; bit 0 is "sampled".
    pub flags: u8,
    /// The `tracestate` header, when one came with it and was valid.
    pub state: Option<String>,
}

impl TraceContext {
    /// A `traceparent` header and its `tracestate`. `None` for a malformed
    /// `traceparent`: W3C has receivers ignore it, so a bad header never
    /// fails a call. A malformed `tracestate` is dropped alone.
    pub fn parse(traceparent: &str, tracestate: Option<&str>) -> Option<Self> {
        let traceparent = traceparent.trim_matches([' ', '\t']);
        let bytes = traceparent.as_bytes();
        // version "-" trace-id "-" parent-id "-" flags: 2+1+32+1+16+1+2.
        if bytes.len() < 55 || !bytes.is_ascii() {
            return None;
        }
        let version = u8::from_str_radix(lower_hex(&traceparent[0..2])?, 16).ok()?;
        // Version 255 is invalid; version 0 is exactly 55 characters; a later
        // version may append fields after another dash, which are ignored.
        if version == 0xff || (version == 0 && bytes.len() != 55) {
            return None;
        }
        if bytes.len() > 55 && bytes[55] != b'-' {
            return None;
        }
        if bytes[2] != b'-' || bytes[35] != b'-' || bytes[52] != b'-' {
            return None;
        }
        let trace_id = unhex(lower_hex(&traceparent[3..35])?)?;
        let span_id = unhex(lower_hex(&traceparent[36..52])?)?;
        let flags = u8::from_str_radix(lower_hex(&traceparent[53..55])?, 16).ok()?;
        let span = SpanRef::new(trace_id, span_id)?;
        Some(Self {
            span,
            // Flags other than "sampled" are unknown to version 0: not passed on.
            flags: flags & 0x01,
            state: tracestate.and_then(valid_trace_state),
        })
    }

    /// The `traceparent` header of this context (always version 00).
    pub fn traceparent(&self) -> String {
        format!(
            "00-{}-{}-{:02x}",
            self.span.trace_id_hex(),
            self.span.span_id_hex(),
            self.flags
        )
    }

    pub fn sampled(&self) -> bool {
        self.flags & 0x01 == 1
    }
}

impl fmt::Debug for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.traceparent())?;
        if let Some(state) = &self.state {
            write!(f, " ({state})")?;
        }
        Ok(())
    }
}

/// A `tracestate` worth keeping: list members of printable ASCII, each
/// `key=value`, within [`MAX_TRACE_STATE_LEN`]. Empty members are allowed
/// (W3C) and removed.
fn valid_trace_state(raw: &str) -> Option<String> {
    if raw.len() > MAX_TRACE_STATE_LEN || !raw.bytes().all(|b| (0x20..=0x7e).contains(&b)) {
        return None;
    }
    let mut members = Vec::new();
    for member in raw.split(',') {
        let member = member.trim_matches([' ', '\t']);
        if member.is_empty() {
            continue;
        }
        let (key, value) = member.split_once('=')?;
        let key_ok = !key.is_empty()
            && key.len() <= 256
            && key
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-*/@".contains(&b));
        let value_ok = !value.is_empty()
            && value.len() <= 256
            && !value.ends_with(' ')
            && value.bytes().all(|b| b != b',' && b != b'=');
        if !key_ok || !value_ok {
            return None;
        }
        members.push(member);
    }
    (!members.is_empty() && members.len() <= 32).then(|| members.join(","))
}

/// `raw` when it is lowercase hex: W3C forbids uppercase.
fn lower_hex(raw: &str) -> Option<&str> {
    raw.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        .then_some(raw)
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0xf)]));
    }
    out
}

fn unhex<const N: usize>(raw: &str) -> Option<[u8; N]> {
    let raw = lower_hex(raw)?;
    if raw.len() != N * 2 {
        return None;
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&raw[i * 2..i * 2 + 2], 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const EXAMPLE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn the_w3c_example_parses_and_prints_back() {
        let cx =
            TraceContext::parse(EXAMPLE, Some("rojo=00f067aa0ba902b7,congo=t61rcWkgMzE")).unwrap();
        assert_eq!(cx.span.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(cx.span.span_id_hex(), "00f067aa0ba902b7");
        assert!(cx.sampled());
        assert_eq!(cx.traceparent(), EXAMPLE);
        assert_eq!(
            cx.state.as_deref(),
            Some("rojo=00f067aa0ba902b7,congo=t61rcWkgMzE")
        );
    }

    #[test]
    fn malformed_headers_are_ignored() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            // uppercase hex
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            // all-zero ids
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            // version ff, and version 00 with a suffix
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            // wrong separators
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
        ] {
            assert_eq!(TraceContext::parse(bad, None), None, "{bad}");
        }
    }

    #[test]
    fn later_versions_keep_the_known_fields() {
        let cx = TraceContext::parse(
            "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03-what-ever",
            None,
        )
        .unwrap();
        assert_eq!(
            cx.traceparent(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        );
    }

    #[test]
    fn a_bad_tracestate_is_dropped_alone() {
        for bad in ["no-equals", "UPPER=1", "a=1,=2", &"a=b,".repeat(200)] {
            let cx = TraceContext::parse(EXAMPLE, Some(bad)).unwrap();
            assert_eq!(cx.state, None, "{bad}");
        }
        let cx = TraceContext::parse(EXAMPLE, Some(" a=1 , ,b@c=2")).unwrap();
        assert_eq!(cx.state.as_deref(), Some("a=1,b@c=2"));
    }

    proptest! {
        #[test]
        fn any_context_prints_a_header_that_parses_back(
            trace_id in any::<[u8; 16]>(),
            span_id in any::<[u8; 8]>(),
            sampled in any::<bool>(),
        ) {
            prop_assume!(trace_id != [0; 16] && span_id != [0; 8]);
            let cx = TraceContext {
                span: SpanRef::new(trace_id, span_id).unwrap(),
                flags: u8::from(sampled),
                state: None,
            };
            prop_assert_eq!(TraceContext::parse(&cx.traceparent(), None), Some(cx.clone()));
            let span = cx.span;
            prop_assert_eq!(SpanRef::from_hex(&span.trace_id_hex(), &span.span_id_hex()), Some(span));
        }

        #[test]
        fn parsing_never_panics_and_what_parses_is_canonical(
            raw in "[0-9a-fA-F-]{0,70}|\\PC{0,70}",
            state in proptest::option::of("\\PC{0,80}"),
        ) {
            if let Some(cx) = TraceContext::parse(&raw, state.as_deref()) {
                let printed = cx.traceparent();
                prop_assert_eq!(printed.len(), 55);
                prop_assert_eq!(TraceContext::parse(&printed, cx.state.as_deref()), Some(cx));
            }
        }
    }
}
