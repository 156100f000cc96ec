//! Which trace the current call belongs to. Adapters run each call inside
//! [`caller_context_scope`] (the W3C context its caller sent) and, when spans
//! are exported, inside an OpenTelemetry server span; the service asks here
//! which span made a change, which context a new operation keeps, and links
//! the calls acting on an operation to the span that created it.
//!
//! With export off no span exists and the caller's own context stands in,
//! so the operation and its events still name the caller's trace.

use std::future::Future;

use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use opsd_core::{Operation, SpanRef, TraceContext};
use tokio::task::futures::TaskLocalFuture;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The `tracing` target of opsd's own spans: exported, never logged.
pub const TARGET: &str = "opsd::trace";

tokio::task_local! {
    static CALLER_CONTEXT: Option<TraceContext>;
}

/// `call` run as a call whose caller sent `context` (`traceparent` and
/// `tracestate`, parsed).
pub fn caller_context_scope<F: Future>(
    context: Option<TraceContext>,
    call: F,
) -> TaskLocalFuture<Option<TraceContext>, F> {
    CALLER_CONTEXT.scope(context, call)
}

/// The context the current call's caller sent, if any.
pub fn caller_context() -> Option<TraceContext> {
    CALLER_CONTEXT.try_with(Clone::clone).ok().flatten()
}

/// The span the current call runs in: opsd's own when spans are exported,
/// else the caller's.
pub fn current_span() -> Option<SpanRef> {
    match exported_span_context() {
        Some(context) => span_ref(&context),
        None => CALLER_CONTEXT
            .try_with(|context| context.as_ref().map(|context| context.span))
            .ok()
            .flatten(),
    }
}

/// What a new operation keeps: the span of the call creating it (opsd's
/// server span, a child of the caller's; or the caller's own when spans are
/// not exported), with the caller's `tracestate`.
pub fn context_for_new_operation() -> Option<TraceContext> {
    let caller = caller_context();
    match exported_span_context()
        .and_then(|context| span_ref(&context).map(|span| (span, context.trace_flags().to_u8())))
    {
        Some((span, flags)) => Some(TraceContext {
            span,
            flags: flags & 0x01,
            state: caller.and_then(|caller| caller.state),
        }),
        None => caller,
    }
}

/// Links the current call's span to the span that created `op`, as
/// OpenTelemetry does for work that outlives the request that started it,
/// and names the operation on it. Nothing happens when spans are not
/// exported.
pub fn link_to_creation(op: &Operation) {
    let current = tracing::Span::current();
    if current.is_disabled() {
        return;
    }
    name_operation(&current, op);
    if let Some(trace) = &op.trace {
        current.add_link(span_context(trace));
    }
}

/// Records on the current span which operation the call made.
pub fn created(op: &Operation) {
    let current = tracing::Span::current();
    if !current.is_disabled() {
        name_operation(&current, op);
    }
}

fn name_operation(span: &tracing::Span, op: &Operation) {
    span.set_attribute("opsd.operation.id", op.id.to_string());
}

/// `trace` as OpenTelemetry's remote span context (a parent or a link).
pub fn span_context(trace: &TraceContext) -> SpanContext {
    SpanContext::new(
        TraceId::from_bytes(trace.span.trace_id),
        SpanId::from_bytes(trace.span.span_id),
        TraceFlags::new(trace.flags),
        true,
        trace
            .state
            .as_deref()
            .and_then(|state| state.parse::<TraceState>().ok())
            .unwrap_or_default(),
    )
}

/// The current `tracing` span's OpenTelemetry context, when it has one
/// (only with the export layer installed).
fn exported_span_context() -> Option<SpanContext> {
    let current = tracing::Span::current();
    if current.is_disabled() {
        return None;
    }
    let context = current.context();
    let span = context.span();
    let span_context = span.span_context();
    span_context.is_valid().then(|| span_context.clone())
}

fn span_ref(context: &SpanContext) -> Option<SpanRef> {
    SpanRef::new(context.trace_id().to_bytes(), context.span_id().to_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller() -> TraceContext {
        TraceContext::parse(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            Some("vendor=1"),
        )
        .unwrap()
    }

    #[tokio::test]
    async fn without_export_the_callers_context_stands_in() {
        assert_eq!(current_span(), None);
        assert_eq!(context_for_new_operation(), None);
        let (span, kept) = caller_context_scope(Some(caller()), async {
            (current_span(), context_for_new_operation())
        })
        .await;
        assert_eq!(span, Some(caller().span));
        assert_eq!(kept, Some(caller()));
    }

    #[test]
    fn a_stored_context_becomes_a_remote_span_context() {
        let context = span_context(&caller());
        assert!(context.is_valid() && context.is_remote() && context.is_sampled());
        assert_eq!(
            context.trace_id().to_bytes(),
            caller().span.trace_id,
            "same trace"
        );
        assert_eq!(context.trace_state().get("vendor"), Some("1"));
    }
}
