//! Logs and traces of the opsd process: the `tracing` subscriber (text or
//! JSON logs, with the current trace and span ids in JSON), and, when an
//! OTLP endpoint is configured, OpenTelemetry spans exported through a
//! bounded queue that never slows a request down: a full queue or a failed
//! export drops spans and counts them in `opsd_trace_spans_dropped_total`.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use opentelemetry::KeyValue;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{
    Sampler, SdkTracerProvider, Span, SpanData, SpanExporter as _, SpanProcessor,
};
use opsd_service::trace::TARGET;
use tokio::sync::{mpsc, oneshot};
use tracing::{Event, Subscriber};
use tracing_subscriber::filter::{EnvFilter, FilterExt, Targets, filter_fn};
use tracing_subscriber::fmt::format::{Format, Json, JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, Registry};

use crate::config::LogFormat;

/// How spans reach the collector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OtlpProtocol {
    Grpc,
    HttpProtobuf,
}

impl OtlpProtocol {
    pub fn parse(raw: &str) -> Result<Self, String> {
        match raw {
            "grpc" => Ok(Self::Grpc),
            "http/protobuf" => Ok(Self::HttpProtobuf),
            "http/json" => Err("http/json is not supported: use grpc or http/protobuf".into()),
            _ => Err(format!("unknown protocol {raw:?} (grpc or http/protobuf)")),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Grpc => "grpc",
            Self::HttpProtobuf => "http/protobuf",
        }
    }
}

/// Which spans are recorded, as `OTEL_TRACES_SAMPLER` names them.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum SamplerKind {
    AlwaysOn,
    AlwaysOff,
    TraceIdRatio,
    ParentBasedAlwaysOn,
    ParentBasedAlwaysOff,
    ParentBasedTraceIdRatio,
}

impl SamplerKind {
    pub const NAMES: [&str; 6] = [
        "always_on",
        "always_off",
        "traceidratio",
        "parentbased_always_on",
        "parentbased_always_off",
        "parentbased_traceidratio",
    ];

    pub fn parse(raw: &str) -> Result<Self, String> {
        Ok(match raw {
            "always_on" => Self::AlwaysOn,
            "always_off" => Self::AlwaysOff,
            "traceidratio" => Self::TraceIdRatio,
            "parentbased_always_on" => Self::ParentBasedAlwaysOn,
            "parentbased_always_off" => Self::ParentBasedAlwaysOff,
            "parentbased_traceidratio" => Self::ParentBasedTraceIdRatio,
            _ => {
                return Err(format!(
                    "unknown sampler {raw:?} ({})",
                    Self::NAMES.join(", ")
                ));
            }
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::AlwaysOn => "always_on",
            Self::AlwaysOff => "always_off",
            Self::TraceIdRatio => "traceidratio",
            Self::ParentBasedAlwaysOn => "parentbased_always_on",
            Self::ParentBasedAlwaysOff => "parentbased_always_off",
            Self::ParentBasedTraceIdRatio => "parentbased_traceidratio",
        }
    }

    fn sampler(self, ratio: f64) -> Sampler {
        match self {
            Self::AlwaysOn => Sampler::AlwaysOn,
            Self::AlwaysOff => Sampler::AlwaysOff,
            Self::TraceIdRatio => Sampler::TraceIdRatioBased(ratio),
            Self::ParentBasedAlwaysOn => Sampler::ParentBased(Box::new(Sampler::AlwaysOn)),
            Self::ParentBasedAlwaysOff => Sampler::ParentBased(Box::new(Sampler::AlwaysOff)),
            Self::ParentBasedTraceIdRatio => {
                Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(ratio)))
            }
        }
    }
}

/// Where and how spans are exported.
#[derive(Clone, Debug, PartialEq)]
pub struct TraceExport {
    /// The collector's traces URL: used as given for gRPC; for HTTP it is
    /// the full `…/v1/traces` URL.
    pub endpoint: String,
    pub protocol: OtlpProtocol,
    pub headers: Vec<(String, String)>,
    /// A CA (PEM) the collector's certificate must chain to, for `https`.
    pub certificate: Option<PathBuf>,
    pub timeout: Duration,
    pub service_name: String,
    pub resource_attributes: Vec<(String, String)>,
    pub sampler: SamplerKind,
    pub sampler_ratio: f64,
    /// Spans waiting for export beyond this many are dropped.
    pub max_queue_size: usize,
    pub max_export_batch_size: usize,
    /// The longest a span waits in the queue before its batch is sent.
    pub schedule_delay: Duration,
}

/// `key=value,key=value` with percent-encoded values, as
/// `OTEL_RESOURCE_ATTRIBUTES` and `OTEL_EXPORTER_OTLP_HEADERS` write them.
pub fn parse_key_values(raw: &str) -> Result<Vec<(String, String)>, String> {
    let mut pairs = Vec::new();
    for item in raw.split(',') {
        let item = item.trim();
        if item.is_empty() {
            continue;
        }
        let (key, value) = item
            .split_once('=')
            .ok_or_else(|| format!("{item:?} is not key=value"))?;
        let key = key.trim();
        if key.is_empty() {
            return Err(format!("{item:?} has an empty key"));
        }
        pairs.push((key.to_owned(), percent_decode(value.trim())?));
    }
    Ok(pairs)
}

fn percent_decode(raw: &str) -> Result<String, String> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = raw
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("{raw:?} has a bad percent escape"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("{raw:?} is not UTF-8 once decoded"))
}

/// Keeps the exporter alive; [`Telemetry::shutdown`] sends what is queued.
#[derive(Default)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
    flush: Option<mpsc::Sender<Queued>>,
}

impl Telemetry {
    /// Whether spans are exported (the call layer makes server spans only then).
    pub fn exports(&self) -> bool {
        self.provider.is_some()
    }

    /// Sends the spans still queued (waiting at most `timeout`), then stops.
    pub async fn shutdown(self, timeout: Duration) {
        if let Some(flush) = &self.flush {
            let (done, flushed) = oneshot::channel();
            let sent = async {
                if flush.send(Queued::Flush(done)).await.is_ok() {
                    let _ = flushed.await;
                }
            };
            if tokio::time::timeout(timeout, sent).await.is_err() {
                tracing::warn!(?timeout, "spans still queued at shutdown were dropped");
            }
        }
        if let Some(provider) = self.provider {
            let _ = provider.shutdown();
        }
    }
}

/// Installs the process's subscriber: logs to stderr as `format`, filtered
/// by `OPSD_LOG` (default `info`), and spans to `export` when given. Must
/// run inside the tokio runtime (the exporter's task lives there).
pub fn init(format: LogFormat, export: Option<&TraceExport>) -> anyhow::Result<Telemetry> {
    let log_filter =
        || EnvFilter::try_from_env("OPSD_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    // opsd's own spans are for the exporter; logs stay as they were.
    let not_a_trace_span = || filter_fn(|meta| !(meta.is_span() && meta.target() == TARGET));
    let logs = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_filter(log_filter().and(not_a_trace_span()))
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .fmt_fields(JsonFields::new())
            .event_format(WithTraceIds(
                tracing_subscriber::fmt::format()
                    .json()
                    .with_current_span(false)
                    .with_span_list(false),
            ))
            .with_filter(log_filter().and(not_a_trace_span()))
            .boxed(),
    };
    let Some(export) = export else {
        Registry::default().with(logs).try_init()?;
        return Ok(Telemetry::default());
    };
    let (provider, flush) = tracer_provider(export)?;
    let tracer = provider.tracer("opsd");
    let spans = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_location(false)
        .with_threads(false)
        .with_tracked_inactivity(false)
        .with_filter(Targets::new().with_target(TARGET, tracing::Level::TRACE));
    Registry::default().with(logs).with(spans).try_init()?;
    tracing::info!(
        endpoint = %export.endpoint,
        protocol = export.protocol.name(),
        sampler = export.sampler.name(),
        "exporting traces"
    );
    Ok(Telemetry {
        provider: Some(provider),
        flush: Some(flush),
    })
}

fn tracer_provider(
    export: &TraceExport,
) -> anyhow::Result<(SdkTracerProvider, mpsc::Sender<Queued>)> {
    let resource = Resource::builder_empty()
        .with_attributes(
            export
                .resource_attributes
                .iter()
                .map(|(k, v)| KeyValue::new(k.clone(), v.clone())),
        )
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .with_service_name(export.service_name.clone())
        .build();
    let mut exporter = span_exporter(export)?;
    exporter.set_resource(&resource);
    let (queue, received) = mpsc::channel(export.max_queue_size.max(1));
    tokio::spawn(export_loop(
        exporter,
        received,
        export.max_export_batch_size.max(1),
        export.schedule_delay,
        export.timeout,
    ));
    let provider = SdkTracerProvider::builder()
        .with_span_processor(ExportQueue {
            queue: queue.clone(),
        })
        .with_sampler(export.sampler.sampler(export.sampler_ratio))
        .with_resource(resource)
        .build();
    Ok((provider, queue))
}

fn span_exporter(export: &TraceExport) -> anyhow::Result<opentelemetry_otlp::SpanExporter> {
    let https = export.endpoint.starts_with("https://");
    anyhow::ensure!(
        https || export.endpoint.starts_with("http://"),
        "otlp endpoint {} must be an http:// or https:// url",
        export.endpoint
    );
    match export.protocol {
        OtlpProtocol::Grpc => {
            let mut metadata = tonic::metadata::MetadataMap::new();
            for (key, value) in &export.headers {
                let key = tonic::metadata::MetadataKey::from_bytes(key.to_lowercase().as_bytes())
                    .with_context(|| {
                    format!("otlp header {key:?} is not a valid header name")
                })?;
                let value = value
                    .parse()
                    .with_context(|| format!("otlp header {key:?} has an invalid value"))?;
                metadata.insert(key, value);
            }
            let mut builder = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(export.endpoint.clone())
                .with_timeout(export.timeout)
                .with_metadata(metadata);
            if https {
                let mut tls = tonic::transport::ClientTlsConfig::new().with_webpki_roots();
                if let Some(path) = &export.certificate {
                    let pem = std::fs::read(path).with_context(|| {
                        format!("cannot read otlp certificate {}", path.display())
                    })?;
                    tls = tls.ca_certificate(tonic::transport::Certificate::from_pem(pem));
                }
                builder = builder.with_tls_config(tls);
            }
            Ok(builder.build()?)
        }
        OtlpProtocol::HttpProtobuf => {
            anyhow::ensure!(
                !https,
                "otlp over http/protobuf is plaintext only here; use the grpc protocol for an https collector"
            );
            Ok(opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                .with_endpoint(export.endpoint.clone())
                .with_timeout(export.timeout)
                .with_headers(export.headers.iter().cloned().collect::<HashMap<_, _>>())
                .with_http_client(
                    opentelemetry_http::hyper::HyperClient::with_default_connector(
                        export.timeout,
                        None,
                    ),
                )
                .build()?)
        }
    }
}

enum Queued {
    Span(Box<SpanData>),
    /// Export what is queued, then answer.
    Flush(oneshot::Sender<()>),
}

/// Hands ended spans to the export task without ever waiting: when the
/// queue is full the span is dropped and counted.
#[derive(Debug)]
struct ExportQueue {
    queue: mpsc::Sender<Queued>,
}

impl fmt::Debug for Queued {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Queued::Span(_) => "span",
            Queued::Flush(_) => "flush",
        })
    }
}

impl SpanProcessor for ExportQueue {
    fn on_start(&self, _span: &mut Span, _cx: &opentelemetry::Context) {}

    fn on_end(&self, span: SpanData) {
        if !span.span_context.is_sampled() {
            return;
        }
        if self.queue.try_send(Queued::Span(Box::new(span))).is_err() {
            opsd_service::metrics::trace_spans_dropped().inc();
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        // Flushing waits for the collector; only `Telemetry::shutdown` may.
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
}

/// Collects spans into batches of up to `max_batch`, sent when full or
/// `delay` after the first; a batch that fails or times out is dropped.
async fn export_loop(
    exporter: opentelemetry_otlp::SpanExporter,
    mut queue: mpsc::Receiver<Queued>,
    max_batch: usize,
    delay: Duration,
    timeout: Duration,
) {
    let failing = AtomicBool::new(false);
    let send = |batch: Vec<SpanData>| {
        let exporter = &exporter;
        let failing = &failing;
        async move {
            if batch.is_empty() {
                return;
            }
            let count = batch.len() as u64;
            let result = match tokio::time::timeout(timeout, exporter.export(batch)).await {
                Ok(result) => result,
                Err(_) => Err(OTelSdkError::Timeout(timeout)),
            };
            match result {
                Ok(()) => {
                    if failing.swap(false, Ordering::Relaxed) {
                        tracing::info!("trace export recovered");
                    }
                }
                Err(e) => {
                    opsd_service::metrics::trace_spans_dropped().inc_by(count);
                    // Said once per outage, not once per batch.
                    if !failing.swap(true, Ordering::Relaxed) {
                        tracing::warn!(error = %e, dropped = count, "trace export failed, dropping spans until it recovers");
                    }
                }
            }
        }
    };
    let mut batch = Vec::with_capacity(max_batch);
    loop {
        // Wait for the first span of a batch, then at most `delay` for the rest.
        let first = match queue.recv().await {
            Some(first) => first,
            None => return,
        };
        let deadline = tokio::time::Instant::now() + delay;
        let mut next = Some(first);
        loop {
            match next.take() {
                Some(Queued::Span(span)) => {
                    batch.push(*span);
                    if batch.len() >= max_batch {
                        send(std::mem::replace(&mut batch, Vec::with_capacity(max_batch))).await;
                        break;
                    }
                }
                Some(Queued::Flush(done)) => {
                    send(std::mem::replace(&mut batch, Vec::with_capacity(max_batch))).await;
                    let _ = done.send(());
                    break;
                }
                None => {}
            }
            match tokio::time::timeout_at(deadline, queue.recv()).await {
                Ok(Some(queued)) => next = Some(queued),
                Ok(None) => {
                    send(std::mem::take(&mut batch)).await;
                    return;
                }
                Err(_) => {
                    send(std::mem::replace(&mut batch, Vec::with_capacity(max_batch))).await;
                    break;
                }
            }
        }
    }
}

/// JSON log lines with `trace_id` and `span_id` of the call they belong
/// to, when it is traced.
struct WithTraceIds(Format<Json>);

impl<S, N> FormatEvent<S, N> for WithTraceIds
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let Some(span) = opsd_service::trace::current_span() else {
            return self.0.format_event(ctx, writer, event);
        };
        let mut line = String::new();
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
        match line.trim_end().strip_suffix('}') {
            Some(object) => writeln!(
                writer,
                "{object},\"trace_id\":\"{}\",\"span_id\":\"{}\"}}",
                span.trace_id_hex(),
                span.span_id_hex()
            ),
            None => writer.write_str(&line),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_values_are_percent_decoded() {
        assert_eq!(
            parse_key_values("service.namespace=cloud, deployment.environment=prod%2Ceu ,")
                .unwrap(),
            vec![
                ("service.namespace".to_owned(), "cloud".to_owned()),
                ("deployment.environment".to_owned(), "prod,eu".to_owned()),
            ]
        );
        assert!(parse_key_values("novalue").is_err());
        assert!(parse_key_values("=x").is_err());
        assert!(parse_key_values("k=%zz").is_err());
        assert!(parse_key_values("k=%ff").is_err());
    }

    #[test]
    fn samplers_and_protocols_have_their_standard_names() {
        for name in SamplerKind::NAMES {
            assert_eq!(SamplerKind::parse(name).unwrap().name(), name);
        }
        assert!(SamplerKind::parse("sometimes").is_err());
        assert_eq!(OtlpProtocol::parse("grpc"), Ok(OtlpProtocol::Grpc));
        assert_eq!(
            OtlpProtocol::parse("http/protobuf"),
            Ok(OtlpProtocol::HttpProtobuf)
        );
        assert!(OtlpProtocol::parse("http/json").is_err());
    }

    proptest::proptest! {
        #[test]
        fn parse_key_values_never_panics(raw in "\\PC{0,60}") {
            let _ = parse_key_values(&raw);
        }
    }
}
