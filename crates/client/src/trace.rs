//! W3C trace context on every call: the current span's (from `tracing` with
//! `tracing-opentelemetry`, or OpenTelemetry's current context), else a
//! context the client was given (opsctl's `TRACEPARENT`, an operation's own).

use opentelemetry::trace::{SpanContext, TraceContextExt};
use tonic::metadata::{Ascii, MetadataMap, MetadataValue};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// A fixed context to send when the current span has none.
#[derive(Clone, Debug)]
pub(crate) struct FixedTrace {
    traceparent: MetadataValue<Ascii>,
    tracestate: Option<MetadataValue<Ascii>>,
    trace_id: String,
    /// Send it even when the current span belongs to another trace: the
    /// calls of an operation's handle belong to the operation's trace.
    join: bool,
}

impl FixedTrace {
    /// `None` unless `traceparent` is a well-formed W3C header.
    pub(crate) fn new(traceparent: &str, tracestate: Option<&str>, join: bool) -> Option<Self> {
        let trace_id = trace_id_of(traceparent)?;
        Some(Self {
            traceparent: MetadataValue::try_from(traceparent).ok()?,
            tracestate: tracestate
                .filter(|state| !state.is_empty())
                .and_then(|state| MetadataValue::try_from(state).ok()),
            trace_id,
            join,
        })
    }
}

/// Adds `traceparent` (and `tracestate`) unless the call has them already.
pub(crate) fn inject(metadata: &mut MetadataMap, fixed: Option<&FixedTrace>) {
    if metadata.contains_key("traceparent") {
        return;
    }
    let current = current_span_context();
    let use_fixed = match (&current, fixed) {
        (_, None) => false,
        (None, Some(_)) => true,
        (Some(current), Some(fixed)) => {
            fixed.join && format!("{:032x}", current.trace_id()) != fixed.trace_id
        }
    };
    if use_fixed {
        let fixed = fixed.expect("checked above");
        metadata.insert("traceparent", fixed.traceparent.clone());
        if let Some(state) = &fixed.tracestate {
            metadata.insert("tracestate", state.clone());
        }
        return;
    }
    let Some(current) = current else { return };
    let header = format!(
        "00-{:032x}-{:016x}-{:02x}",
        current.trace_id(),
        current.span_id(),
        current.trace_flags().to_u8() & 0x01
    );
    if let Ok(value) = MetadataValue::try_from(header) {
        metadata.insert("traceparent", value);
    }
    let state = current.trace_state().header();
    if !state.is_empty()
        && let Ok(value) = MetadataValue::try_from(state)
    {
        metadata.insert("tracestate", value);
    }
}

fn current_span_context() -> Option<SpanContext> {
    let from_tracing = tracing::Span::current().context();
    let span = from_tracing.span();
    if span.span_context().is_valid() {
        return Some(span.span_context().clone());
    }
    let current = opentelemetry::Context::current();
    let span = current.span();
    span.span_context()
        .is_valid()
        .then(|| span.span_context().clone())
}

/// The trace id of a W3C `traceparent`, when it is a well-formed one (the
/// rules of `opsd_core::TraceContext::parse`, which the server applies too).
pub fn trace_id_of(traceparent: &str) -> Option<String> {
    opsd_core::TraceContext::parse(traceparent, None).map(|context| context.span.trace_id_hex())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_fixed_context_is_sent_without_a_current_span() {
        let fixed = FixedTrace::new(PARENT, Some("vendor=1"), false).unwrap();
        let mut metadata = MetadataMap::new();
        inject(&mut metadata, Some(&fixed));
        assert_eq!(metadata.get("traceparent").unwrap(), PARENT);
        assert_eq!(metadata.get("tracestate").unwrap(), "vendor=1");
    }

    #[test]
    fn nothing_is_sent_without_any_context_and_a_callers_own_header_wins() {
        let mut metadata = MetadataMap::new();
        inject(&mut metadata, None);
        assert!(metadata.is_empty());
        let own = "00-11111111111111111111111111111111-2222222222222222-00";
        metadata.insert("traceparent", own.parse().unwrap());
        inject(
            &mut metadata,
            Some(&FixedTrace::new(PARENT, None, true).unwrap()),
        );
        assert_eq!(metadata.get("traceparent").unwrap(), own);
    }

    #[test]
    fn trace_ids_come_only_from_well_formed_headers() {
        assert_eq!(
            trace_id_of(PARENT).as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        for bad in [
            "",
            "garbage",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
        ] {
            assert_eq!(trace_id_of(bad), None, "{bad}");
        }
        assert!(FixedTrace::new("garbage", None, false).is_none());
    }
}
