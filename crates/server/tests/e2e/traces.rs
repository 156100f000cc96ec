//! Traces: a real opsd process exporting over OTLP to a collector inside
//! the test (the OpenTelemetry collector's gRPC service, or its HTTP
//! `/v1/traces` route, on port 0). The spans are checked as a trace viewer
//! would show them: the Create span a child of the caller's, the later
//! calls and the reaper's completions linked to it, the timeline naming
//! the spans that made each change.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AttributeValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opsd_client::{Client, Completion, ConnectOptions, NewOperation, ProducerOptions};
use prost::Message;
use tokio::sync::Notify;

use crate::process::Process;

/// The caller's context in these tests.
const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

fn caller_traceparent() -> String {
    format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01")
}

/// One exported span and the `service.name` of its resource.
#[derive(Clone, Debug)]
struct Exported {
    span: Span,
    service_name: String,
}

impl Exported {
    fn trace_id(&self) -> String {
        hex(&self.span.trace_id)
    }
    fn span_id(&self) -> String {
        hex(&self.span.span_id)
    }
    fn parent_span_id(&self) -> String {
        hex(&self.span.parent_span_id)
    }
    fn links(&self) -> Vec<(String, String)> {
        self.span
            .links
            .iter()
            .map(|link| (hex(&link.trace_id), hex(&link.span_id)))
            .collect()
    }
    fn attribute(&self, key: &str) -> Option<String> {
        self.span
            .attributes
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.as_ref()?.value.as_ref())
            .map(|value| match value {
                AttributeValue::StringValue(s) => s.clone(),
                AttributeValue::IntValue(n) => n.to_string(),
                other => format!("{other:?}"),
            })
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Everything opsd exported, in arrival order.
#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<Exported>>>,
    arrived: Arc<Notify>,
    requests: Arc<Mutex<usize>>,
}

impl Collector {
    fn take(&self, request: ExportTraceServiceRequest) {
        let mut spans = self.spans.lock().unwrap();
        for resource_spans in request.resource_spans {
            let service_name = resource_spans
                .resource
                .iter()
                .flat_map(|r| r.attributes.iter())
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                    AttributeValue::StringValue(s) => Some(s.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            for scope in resource_spans.scope_spans {
                for span in scope.spans {
                    spans.push(Exported {
                        span,
                        service_name: service_name.clone(),
                    });
                }
            }
        }
        *self.requests.lock().unwrap() += 1;
        self.arrived.notify_waiters();
    }

    fn count(&self) -> usize {
        self.spans.lock().unwrap().len()
    }

    /// The first span matching `wanted`, waiting up to 10 s for it.
    async fn span(&self, what: &str, wanted: impl Fn(&Exported) -> bool) -> Exported {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let arrived = self.arrived.notified();
            if let Some(found) = self.spans.lock().unwrap().iter().find(|s| wanted(s)) {
                return found.clone();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "no exported span {what}; got: {:#?}",
                self.spans
                    .lock()
                    .unwrap()
                    .iter()
                    .map(|s| (&s.span.name, s.trace_id()))
                    .collect::<Vec<_>>()
            );
            let _ = tokio::time::timeout(left, arrived).await;
        }
    }

    /// A span of the call `name` (`service/method` or `METHOD route`)
    /// about operation `id`.
    async fn call(&self, name: &str, id: &str) -> Exported {
        self.span(&format!("{name} of {id}"), |s| {
            s.span.name == name && s.attribute("opsd.operation.id").as_deref() == Some(id)
        })
        .await
    }
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.take(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// The collector's gRPC service on a free port; returns its URL.
async fn grpc_collector(collector: &Collector) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let service = TraceServiceServer::new(collector.clone());
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await
            .unwrap();
    });
    format!("http://{address}")
}

/// The collector's OTLP/HTTP route (`POST /v1/traces`, protobuf) on a free port.
async fn http_collector(collector: &Collector) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let collector = collector.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: axum::body::Bytes| {
            let collector = collector.clone();
            async move {
                let request = ExportTraceServiceRequest::decode(body).unwrap();
                collector.take(request);
                (
                    [(http::header::CONTENT_TYPE, "application/x-protobuf")],
                    ExportTraceServiceResponse::default().encode_to_vec(),
                )
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{address}")
}

async fn client(endpoint: &str, traceparent: Option<&str>) -> Client {
    Client::connect_with(
        endpoint,
        ConnectOptions {
            traceparent: traceparent.map(str::to_owned),
            tracestate: traceparent.map(|_| "vendor=abc".to_owned()),
            ..ConnectOptions::default()
        },
    )
    .await
    .unwrap()
}

fn exporting(data_dir: &std::path::Path, collector: &str, protocol: &str) -> Process {
    Process::start_with(&[
        "--data-dir",
        data_dir.to_str().unwrap(),
        "--otlp-endpoint",
        collector,
        "--otlp-protocol",
        protocol,
        "--trace-sampler",
        "always_on",
        "--trace-export-delay",
        "20ms",
        "--reaper-interval",
        "100ms",
        "--service-name",
        "opsd-under-test",
    ])
}

/// Splits a `traceparent` into its trace and span ids.
fn ids(traceparent: &str) -> (String, String) {
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(parts.len(), 4, "{traceparent:?} is a traceparent");
    (parts[1].to_owned(), parts[2].to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_operations_life_is_one_trace_over_grpc_export() {
    let collector = Collector::default();
    let url = grpc_collector(&collector).await;
    let dir = tempfile::tempdir().unwrap();
    let opsd = exporting(dir.path(), &url, "grpc");
    lifecycle_is_traced(&opsd, &collector).await;
    opsd.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_operations_life_is_one_trace_over_http_export() {
    let collector = Collector::default();
    let url = http_collector(&collector).await;
    let dir = tempfile::tempdir().unwrap();
    let opsd = exporting(dir.path(), &url, "http/protobuf");
    lifecycle_is_traced(&opsd, &collector).await;
    opsd.terminate().await;
}

async fn lifecycle_is_traced(opsd: &Process, collector: &Collector) {
    let traced = client(&opsd.endpoint, Some(&caller_traceparent())).await;
    // A consumer with no trace of its own.
    let untraced = client(&opsd.endpoint, None).await;

    // Create: a server span, child of the caller's span, in its trace.
    let created = traced
        .create(NewOperation {
            cancellation_policy: opsd_client::CancellationPolicy::Cooperative,
            ..NewOperation::new("snapshot disk-1")
        })
        .await
        .unwrap();
    let id = created.operation.clone().unwrap().id;
    let (trace_id, creation_span) = ids(&created.trace_parent);
    assert_eq!(
        trace_id, CALLER_TRACE,
        "the operation joins the caller's trace"
    );
    assert_ne!(
        creation_span, CALLER_SPAN,
        "opsd's own span, not the caller's"
    );
    assert_eq!(created.trace_state, "vendor=abc");
    let create = collector.call("opsd.v1.ProducerService/Create", &id).await;
    assert_eq!(create.trace_id(), CALLER_TRACE);
    assert_eq!(create.parent_span_id(), CALLER_SPAN);
    assert_eq!(create.span_id(), creation_span);
    assert_eq!(create.span.kind, SpanKind::Server as i32);
    assert_eq!(create.service_name, "opsd-under-test");
    assert_eq!(create.attribute("rpc.system").as_deref(), Some("grpc"));
    assert_eq!(
        create.attribute("rpc.grpc.status_code").as_deref(),
        Some("0")
    );
    let to_creation = (CALLER_TRACE.to_owned(), creation_span.clone());

    // Calls from elsewhere acting on the operation link to its creation.
    let waited = untraced
        .wait(&id, Some(Duration::from_millis(10)))
        .await
        .unwrap();
    assert!(!waited.operation.unwrap().done);
    let wait = collector.call("opsd.v1.OperationService/Wait", &id).await;
    assert!(wait.links().contains(&to_creation), "{:?}", wait.links());
    assert_ne!(wait.trace_id(), CALLER_TRACE, "a trace of its own, linked");

    untraced.cancel(&id).await.unwrap();
    let cancel = collector
        .call("yandex.cloud.operation.OperationService/Cancel", &id)
        .await;
    assert!(cancel.links().contains(&to_creation));

    untraced
        .report_failure(
            &id,
            opsd_proto::RpcStatus {
                code: 8,
                message: "quota".into(),
                details: vec![],
            },
        )
        .await
        .unwrap();
    let report = collector
        .call("opsd.v1.ProducerService/ReportFailure", &id)
        .await;
    assert!(report.links().contains(&to_creation));

    untraced
        .complete(&id, Completion::ReportedFailure)
        .await
        .unwrap();
    let complete = collector
        .call("opsd.v1.ProducerService/Complete", &id)
        .await;
    assert!(complete.links().contains(&to_creation));

    // The timeline names the span of each change.
    let events = untraced.list_events(&id, 100, "").await.unwrap().events;
    let spans: Vec<(String, String)> = events
        .iter()
        .map(|e| (e.trace_id.clone(), e.span_id.clone()))
        .collect();
    assert_eq!(
        spans,
        [
            (create.trace_id(), create.span_id()),
            (cancel.trace_id(), cancel.span_id()),
            (report.trace_id(), report.span_id()),
            (complete.trace_id(), complete.span_id()),
        ],
        "created, cancel requested, failure reported, completed"
    );

    // A producer's handle makes its calls in the operation's trace.
    let handle = traced
        .start_operation(
            NewOperation::new("resize disk-2"),
            ProducerOptions::default(),
        )
        .await
        .unwrap();
    let produced = traced.get_details(handle.id()).await.unwrap();
    let (_, handle_creation) = ids(&produced.trace_parent);
    handle
        .progress(opsd_client::Progress {
            work_done: 1,
            work_total: 2,
            ..Default::default()
        })
        .await
        .unwrap();
    let handle_id = handle.id().to_owned();
    handle
        .succeed(opsd_client::pack_struct(&Default::default()))
        .await
        .unwrap();
    for name in [
        "opsd.v1.ProducerService/UpdateMetadata",
        "opsd.v1.ProducerService/Complete",
    ] {
        let call = collector.call(name, &handle_id).await;
        assert_eq!(
            call.trace_id(),
            CALLER_TRACE,
            "{name} joins the operation's trace"
        );
        assert_eq!(call.parent_span_id(), handle_creation, "{name}");
        assert!(
            call.links()
                .contains(&(CALLER_TRACE.to_owned(), handle_creation.clone()))
        );
    }

    // The reaper: a lapsed lease completes in a span linked to the creation.
    let lapsing = traced
        .create(NewOperation {
            lease_duration: Some(Duration::from_secs(1)),
            ..NewOperation::new("lease lapses")
        })
        .await
        .unwrap();
    let lapsing_id = lapsing.operation.unwrap().id;
    let (_, lapsing_creation) = ids(&lapsing.trace_parent);
    let expiry = collector.call("opsd.reaper.expire", &lapsing_id).await;
    assert!(
        expiry
            .links()
            .contains(&(CALLER_TRACE.to_owned(), lapsing_creation)),
        "{:?}",
        expiry.links()
    );
    let lapsed = untraced
        .list_events(&lapsing_id, 100, "")
        .await
        .unwrap()
        .events;
    let last = lapsed.last().unwrap();
    assert_eq!(last.kind(), opsd_client::EventKind::LeaseLapsed);
    assert_eq!(
        (last.trace_id.clone(), last.span_id.clone()),
        (expiry.trace_id(), expiry.span_id()),
        "the reaper's event names the reaper's span"
    );

    // REST calls are spans too, named by their route.
    let answer: serde_json::Value = reqwest::Client::new()
        .post(format!("http://{}/v1/operations", opsd.endpoint))
        .header("traceparent", caller_traceparent())
        .json(&serde_json::json!({ "description": "over rest" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let rest_id = answer["operation"]["id"].as_str().unwrap().to_owned();
    let rest = collector.call("POST /v1/operations", &rest_id).await;
    assert_eq!(rest.parent_span_id(), CALLER_SPAN);
    assert_eq!(
        rest.attribute("http.response.status_code").as_deref(),
        Some("200")
    );
    assert_eq!(
        answer["traceParent"].as_str().map(|p| ids(p).1),
        Some(rest.span_id()),
        "REST shows the trace too"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_export_off_nothing_is_sent_and_only_the_context_is_kept() {
    let collector = Collector::default();
    let url = grpc_collector(&collector).await;
    let dir = tempfile::tempdir().unwrap();
    // An endpoint is configured, but the standard switch turns the SDK off.
    let opsd = Process::start_with_env(
        &["--data-dir", dir.path().to_str().unwrap()],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", url.as_str()),
            ("OTEL_SDK_DISABLED", "true"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ],
    );
    let traced = client(&opsd.endpoint, Some(&caller_traceparent())).await;
    let created = traced.create(NewOperation::new("untraced")).await.unwrap();
    assert_eq!(
        created.trace_parent,
        caller_traceparent(),
        "the caller's own context, as sent"
    );
    assert_eq!(created.trace_state, "vendor=abc");
    let id = created.operation.unwrap().id;
    traced
        .complete(
            &id,
            Completion::Response(opsd_client::pack_struct(&Default::default())),
        )
        .await
        .unwrap();
    let events = traced.list_events(&id, 100, "").await.unwrap().events;
    assert_eq!(events.len(), 2);
    for event in &events {
        assert_eq!(
            (event.trace_id.as_str(), event.span_id.as_str()),
            (CALLER_TRACE, CALLER_SPAN),
            "each event names the caller's span"
        );
    }
    // A call without a context leaves the operation without one.
    let untraced = client(&opsd.endpoint, None).await;
    let plain = untraced.create(NewOperation::new("plain")).await.unwrap();
    assert_eq!(plain.trace_parent, "");
    let plain_events = untraced
        .list_events(&plain.operation.unwrap().id, 100, "")
        .await
        .unwrap()
        .events;
    assert_eq!(plain_events[0].trace_id, "");
    // A malformed traceparent is ignored, never refused.
    let garbled = client(&opsd.endpoint, None).await;
    let answer: serde_json::Value = reqwest::Client::new()
        .post(format!("http://{}/v1/operations", opsd.endpoint))
        .header("traceparent", "00-not-a-trace-01")
        .json(&serde_json::json!({ "description": "garbled" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["traceParent"].as_str().unwrap_or(""), "");
    drop(garbled);
    // A shutdown would flush anything queued: still nothing arrives.
    opsd.terminate().await;
    assert_eq!(collector.count(), 0, "no span is sent with export off");
    assert_eq!(*collector.requests.lock().unwrap(), 0);
}

/// The drop counter, from the metrics endpoint.
async fn dropped_spans(endpoint: &str) -> u64 {
    let text = reqwest::get(format!("http://{endpoint}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find(|line| line.starts_with("opsd_trace_spans_dropped_total "))
        .and_then(|line| line.split_whitespace().nth(1))
        .map(|n| n.parse::<f64>().unwrap() as u64)
        .unwrap_or_else(|| panic!("no opsd_trace_spans_dropped_total in:\n{text}"))
}

/// Calls go on as usual while the collector is unreachable (refuses
/// connections) or stuck (accepts and never answers); spans are dropped and
/// counted, not waited for.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_collector_that_is_down_or_stuck_never_slows_a_call() {
    // Nothing listens on a port just released.
    let refused = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    };
    // Accepts connections and never reads from them.
    let stuck_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let stuck = format!("http://{}", stuck_listener.local_addr().unwrap());
    let held = Arc::new(Mutex::new(Vec::new()));
    {
        let held = Arc::clone(&held);
        tokio::spawn(async move {
            while let Ok((socket, _)) = stuck_listener.accept().await {
                held.lock().unwrap().push(socket);
            }
        });
    }
    for (collector, protocol) in [
        (refused, "grpc"),
        (stuck.clone(), "grpc"),
        (stuck, "http/protobuf"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let opsd = Process::start_with(&[
            "--data-dir",
            dir.path().to_str().unwrap(),
            "--otlp-endpoint",
            &collector,
            "--otlp-protocol",
            protocol,
            "--trace-sampler",
            "always_on",
            "--trace-export-delay",
            "10ms",
            "--trace-queue-size",
            "16",
            "--trace-batch-size",
            "4",
            "--otlp-timeout",
            "300ms",
        ]);
        let traced = client(&opsd.endpoint, Some(&caller_traceparent())).await;
        let mut slowest = Duration::ZERO;
        for n in 0..100 {
            let started = Instant::now();
            let created = traced
                .create(NewOperation::new(format!("op {n}")))
                .await
                .unwrap();
            let id = created.operation.unwrap().id;
            traced.get(&id).await.unwrap();
            slowest = slowest.max(started.elapsed());
        }
        // A loose bound for a loaded machine: the export timeout is 300 ms
        // and the queue holds 16 spans, so a call waiting on the collector
        // would take seconds over 100 rounds.
        assert!(
            slowest < Duration::from_secs(2),
            "{protocol} to {collector}: slowest create and get took {slowest:?}"
        );
        // Spans dropped from a full queue count at once; a batch that failed
        // counts (and the outage is logged) when its export gives up.
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let dropped = dropped_spans(&opsd.endpoint).await;
            let logged = opsd.log_tail().matches("trace export failed").count();
            if dropped > 0 && logged > 0 {
                assert_eq!(logged, 1, "the outage is logged once: {}", opsd.log_tail());
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{protocol} to {collector}: dropped {dropped}, logged {logged}; log:\n{}",
                opsd.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        opsd.terminate().await;
    }
}

/// JSON log lines of a traced call carry its trace and span ids.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn json_logs_carry_the_calls_trace_and_span() {
    let collector = Collector::default();
    let url = grpc_collector(&collector).await;
    let dir = tempfile::tempdir().unwrap();
    let opsd = Process::start_with_env(
        &[
            "--data-dir",
            dir.path().to_str().unwrap(),
            "--log-format",
            "json",
            "--otlp-endpoint",
            &url,
            "--trace-export-delay",
            "20ms",
        ],
        &[("OPSD_LOG", "info,opsd_service=debug")],
    );
    let traced = client(&opsd.endpoint, Some(&caller_traceparent())).await;
    let created = traced.create(NewOperation::new("logged")).await.unwrap();
    let id = created.operation.unwrap().id;
    let create = collector.call("opsd.v1.ProducerService/Create", &id).await;
    let log = opsd.log_tail();
    let line: serde_json::Value = log
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|line| line["fields"]["operation_id"].as_str() == Some(id.as_str()))
        .unwrap_or_else(|| panic!("no log line about {id}:\n{log}"));
    assert_eq!(line["trace_id"], CALLER_TRACE, "{line}");
    assert_eq!(line["span_id"].as_str(), Some(create.span_id().as_str()));
    // Lines outside any call carry none.
    let startup: serde_json::Value = serde_json::from_str(log.lines().next().unwrap()).unwrap();
    assert!(startup.get("trace_id").is_none(), "{startup}");
    opsd.terminate().await;
}
