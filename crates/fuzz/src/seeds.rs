//! The inputs the checked-in corpus was seeded with: valid requests of every
//! kind and the edges around them. `opsd-fuzz --write-seeds` writes them to
//! `corpus/<target>/seed-*`; the corpus is what runs start from.

use opsd_proto::opsd::v1 as pb;
use opsd_proto::yandex::cloud::endpoint as ycep;
use opsd_proto::yandex::cloud::operation as ycop;
use prost::Message;

use crate::harness::{CANCELLED, COOPERATIVE, DONE, FAILED, NOT_CANCELLABLE, RUNNING};

fn struct_any() -> prost_types::Any {
    let any = crate::harness::struct_payload();
    prost_types::Any {
        type_url: any.type_url,
        value: any.value,
    }
}

fn duration(seconds: i64, nanos: i32) -> Option<prost_types::Duration> {
    Some(prost_types::Duration { seconds, nanos })
}

fn timestamp(seconds: i64, nanos: i32) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp { seconds, nanos })
}

/// Named seeds of one target.
pub fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    let named = |items: Vec<(&str, Vec<u8>)>| {
        items
            .into_iter()
            .map(|(name, bytes)| (format!("seed-{name}"), bytes))
            .collect()
    };
    match target {
        "id" => named(vec![
            ("valid", b"ops0123456789abcdefg".to_vec()),
            ("cloud-style", b"fhm8jz9372hvlub0xyy6".to_vec()),
            ("empty", vec![]),
            ("short", b"ops012345".to_vec()),
            ("long", b"ops0123456789abcdefgh".to_vec()),
            ("upper", b"OPS0123456789ABCDEFG".to_vec()),
            ("dash", b"ops0123456789abcdef-".to_vec()),
            ("cyrillic", "ops0123456789abcdeя".as_bytes().to_vec()),
            ("nul", b"ops0123456789abcdef\0".to_vec()),
            ("prefix", b"\x01fhm".to_vec()),
            ("digit-prefix", b"\x011ab".to_vec()),
        ]),
        "page_token" => named(vec![
            ("text-empty", vec![0, 0]),
            ("text-garbage", b"\x00\x00not a token".to_vec()),
            ("text-padded", b"\x00\x00AQ==".to_vec()),
            (
                "bytes-valid-shape",
                [&[1u8, 0][..], &[1], &[0; 16], b"ops0123456789abcdefg"].concat(),
            ),
            (
                "bytes-wrong-version",
                [&[1u8, 0][..], &[2], &[0; 16], b"ops0123456789abcdefg"].concat(),
            ),
            ("bytes-short", vec![1, 0, 1, 2, 3]),
            (
                "cursor-all-filters",
                [
                    &[2u8, 0x7f, 3][..],
                    b"abc",
                    &[2],
                    b"me",
                    &[0, 0, 0, 0, 0, 0, 0, 1],
                    &[0x7f, 0, 0, 0, 0, 0, 0, 0],
                    &[2, 1],
                    b"a",
                    &[1],
                    b"b",
                    &[0xff; 8],
                    &[7; 20],
                ]
                .concat(),
            ),
            (
                "cursor-min",
                [&[2u8, 0][..], &[0x80, 0, 0, 0, 0, 0, 0, 0]].concat(),
            ),
        ]),
        "list_query" => {
            let proto =
                |request: pb::ListOperationsRequest| [vec![0u8], request.encode_to_vec()].concat();
            let query = |text: &str| [vec![1u8], text.as_bytes().to_vec()].concat();
            named(vec![
                ("proto-empty", vec![0]),
                (
                    "proto-page",
                    proto(pb::ListOperationsRequest {
                        page_size: 3,
                        ..Default::default()
                    }),
                ),
                (
                    "proto-all-filters",
                    proto(pb::ListOperationsRequest {
                        page_size: 10,
                        resource_id: "disk-1".into(),
                        created_by: "alice".into(),
                        state: pb::StateFilter::Running.into(),
                        created_after: timestamp(1_700_000_000, 0),
                        created_before: timestamp(1_700_000_010, 500),
                        scope: "folder-a".into(),
                        ..Default::default()
                    }),
                ),
                (
                    "proto-search",
                    proto(pb::ListOperationsRequest {
                        page_size: 2,
                        id_prefix: "ops".into(),
                        description_contains: "Op 1".into(),
                        ..Default::default()
                    }),
                ),
                (
                    "proto-bad-size",
                    proto(pb::ListOperationsRequest {
                        page_size: 1001,
                        ..Default::default()
                    }),
                ),
                (
                    "proto-bad-time",
                    proto(pb::ListOperationsRequest {
                        created_after: timestamp(i64::MAX, 0),
                        ..Default::default()
                    }),
                ),
                ("query-empty", vec![1]),
                ("query-page", query("pageSize=2&state=done")),
                (
                    "query-all",
                    query(
                        "pageSize=5&state=RUNNING&resourceId=disk-2&createdBy=bob&scope=folder-b\
                         &createdAfter=2023-11-14T22:13:20Z&createdBefore=2023-11-14T22:13:40Z",
                    ),
                ),
                (
                    "query-unicode",
                    query("resourceId=%D0%B4%D0%B8%D1%81%D0%BA%203"),
                ),
                ("query-token", query("pageSize=1&pageToken=AQ")),
                ("query-twice", query("pageSize=1&pageSize=2")),
                ("query-unknown", query("color=blue")),
                ("query-control", query("createdBy=%00")),
                (
                    "query-search",
                    query("idPrefix=ops&descriptionContains=%C3%84RGER%25_%5C&pageSize=2"),
                ),
            ])
        }
        "grpc" => grpc_seeds(),
        "rest" => rest_seeds(),
        "iam" => named(iam_seeds()),
        "config" => {
            named(vec![
            ("empty", vec![]),
            (
                "full",
                b"listen = \"127.0.0.1:7117\"\nstore = \"postgres://opsd:secret@db:5432/opsd\"\n\
                  public_address = \"opsd.example.internal:443\"\nretention = \"7d\"\n\
                  endpoint_ids = [\"compute\", \"iam=iam.example:443\"]\n\
                  postgres_max_connections = 4\nmax_message_size = \"1MiB\"\n\
                  max_streams_per_connection = 256\nmax_watchers_per_connection = 64\n\
                  max_watchers = 1000\nlog_format = \"json\"\nid_prefix = \"fhm\"\n"
                    .to_vec(),
            ),
            ("memory", b"store = \"memory\"\npoll_interval = \"2s\"\n".to_vec()),
            (
                "postgres-production",
                b"store = \"postgres://opsd:secret@pgbouncer:6432/opsd?sslmode=disable\"\n\
                  postgres_pooler = \"transaction\"\nno_migrate = \"true\"\n\
                  postgres_listen_url = \"postgres://opsd:secret@db-a:5432,db-b:5432/opsd?\
                  target_session_attrs=read-write&sslmode=verify-full&sslrootcert=/etc/opsd/ca.pem\"\n"
                    .to_vec(),
            ),
            ("pooler-alone", b"store = \"sqlite\"\npostgres_pooler = \"session\"\n".to_vec()),
            ("tls-half", b"tls_cert = \"cert.pem\"\n".to_vec()),
            ("unknown-key", b"colour = \"blue\"\n".to_vec()),
            ("bad-type", b"retention = true\n".to_vec()),
            ("bad-duration", b"max_wait = \"10w\"\n".to_vec()),
            ("bad-size", b"max_message_size = \"1TiB\"\n".to_vec()),
            ("zero-streams", b"max_streams_per_connection = 0\n".to_vec()),
            ("not-toml", b"listen = \n".to_vec()),
            ("table", b"[listen]\nport = 1\n".to_vec()),
            ("print-config", b"print_config = \"true\"\n".to_vec()),
            (
                "iam",
                b"tokens_file = \"tokens.toml\"\niam_signing_key = \"iam.pem\"\n\
                  iam_token_lifetime = \"1h\"\n\
                  iam_audiences = [\"https://iam.opsd.example/iam/v1/tokens\"]\n"
                    .to_vec(),
            ),
            ("iam-short-lifetime", b"iam_token_lifetime = \"30s\"\n".to_vec()),
            (
                "iam-blank-audience",
                b"iam_signing_key = \"iam.pem\"\niam_audiences = [\" \"]\n".to_vec(),
            ),
            (
                "console",
                b"console_trace_url = \"https://jaeger.internal/trace/{trace_id}\"\n\
                  console_stuck_after = \"15m\"\n"
                    .to_vec(),
            ),
            (
                "console-bad-trace-url",
                b"console_trace_url = \"javascript:alert({trace_id})\"\n".to_vec(),
            ),
            ("duration", b"30s".to_vec()),
            ("size", b"512KiB".to_vec()),
        ])
        }
        _ => Vec::new(),
    }
}

/// The `iam` target's modes (see `targets/iam.rs`): 0 raw, 1 oauth token,
/// 2 header NUL claims signed with the service-account key, 3 the same
/// signed with the IAM signing key.
fn iam_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let raw = |mode: u8, text: &str| [vec![mode], text.as_bytes().to_vec()].concat();
    let signed = |mode: u8, header: &str, claims: &str| {
        [
            vec![mode],
            header.as_bytes().to_vec(),
            vec![0],
            claims.as_bytes().to_vec(),
        ]
        .concat()
    };
    let aud = "https://iam.opsd.fuzz:443/iam/v1/tokens";
    let sa = |claims: String| signed(2, "", &claims);
    let claims = |iss: &str, aud: &str, iat: i64, exp: i64| {
        format!(r#"{{"iss":"{iss}","aud":"{aud}","iat":{iat},"exp":{exp}}}"#)
    };
    let account = crate::targets::iam_account();
    vec![
        ("raw-jwt-shape", raw(0, "a.b.c")),
        ("raw-alg-none", raw(0, "eyJhbGciOiJub25lIn0.e30.")),
        ("raw-empty", raw(0, "")),
        ("raw-known-token", raw(0, crate::targets::iam_known_token())),
        ("oauth-known", raw(1, crate::targets::iam_known_token())),
        ("oauth-unknown", raw(1, "opsd_unknown")),
        (
            "sa-valid",
            sa(claims(account, aud, 1_700_000_000, 1_700_003_600)),
        ),
        (
            "sa-cloud-audience-list",
            sa(format!(
                r#"{{"iss":"{account}","aud":["x","https://iam.api.cloud.yandex.net/iam/v1/tokens"],"iat":1700000000,"exp":1700000600}}"#
            )),
        ),
        (
            "sa-expired",
            sa(claims(account, aud, 1_699_990_000, 1_699_993_600)),
        ),
        (
            "sa-wrong-audience",
            sa(claims(
                account,
                "https://iam.elsewhere/iam/v1/tokens",
                1_700_000_000,
                1_700_000_600,
            )),
        ),
        (
            "sa-lifetime-too-long",
            sa(claims(account, aud, 1_700_000_000, 1_700_003_601)),
        ),
        (
            "sa-wrong-issuer",
            sa(claims("someone", aud, 1_700_000_000, 1_700_000_600)),
        ),
        (
            "sa-fractional-times",
            sa(format!(
                r#"{{"iss":"{account}","aud":"{aud}","iat":1700000000.5,"exp":1700000600.9,"nbf":1700000060.5}}"#
            )),
        ),
        (
            "sa-unknown-kid",
            signed(
                2,
                r#"{"kid":"other"}"#,
                &claims(account, aud, 1_700_000_000, 1_700_000_600),
            ),
        ),
        (
            "sa-alg-ps256",
            signed(
                2,
                r#"{"alg":"PS256"}"#,
                &claims(account, aud, 1_700_000_000, 1_700_000_600),
            ),
        ),
        (
            "sa-no-iat",
            sa(format!(
                r#"{{"iss":"{account}","aud":"{aud}","exp":1700000600}}"#
            )),
        ),
        ("sa-not-json", sa("not json".to_owned())),
        (
            "iam-valid",
            signed(
                3,
                "",
                r#"{"sub":"fzz","scopes":["folder-a"],"roles":["viewer"],"exp":1700000600}"#,
            ),
        ),
        (
            "iam-every-scope",
            signed(
                3,
                "",
                r#"{"sub":"fzz","scopes":["*"],"roles":["admin","viewer"],"exp":1700000001}"#,
            ),
        ),
        (
            "iam-expired",
            signed(
                3,
                "",
                r#"{"sub":"fzz","scopes":["folder-a"],"roles":["viewer"],"exp":1700000000}"#,
            ),
        ),
        (
            "iam-typ-jwt",
            signed(
                3,
                r#"{"typ":"JWT"}"#,
                r#"{"sub":"fzz","scopes":["folder-a"],"roles":["viewer"],"exp":1700000600}"#,
            ),
        ),
        (
            "iam-other-kid",
            signed(
                3,
                r#"{"kid":"fzzkey"}"#,
                r#"{"sub":"fzz","scopes":["folder-a"],"roles":["viewer"],"exp":1700000600}"#,
            ),
        ),
        (
            "iam-unknown-role",
            signed(
                3,
                "",
                r#"{"sub":"fzz","scopes":["folder-a"],"roles":["owner"],"exp":1700000600}"#,
            ),
        ),
    ]
}

fn grpc_seeds() -> Vec<(String, Vec<u8>)> {
    // The method index of crate::targets::grpc::METHODS, then the message.
    let call = |method: u8, message: Vec<u8>| [vec![method], message].concat();
    let get = |id: &str| {
        ycop::GetOperationRequest {
            operation_id: id.into(),
        }
        .encode_to_vec()
    };
    let create = |request: pb::CreateOperationRequest| call(6, request.encode_to_vec());
    let mut seeds = vec![
        ("cloud-get-running", call(0, get(RUNNING))),
        ("cloud-get-failed", call(0, get(FAILED))),
        ("cloud-get-empty", call(0, vec![])),
        ("cloud-get-unknown", call(0, get("ops00000000000000000"))),
        ("cloud-get-malformed", call(0, get("not an id"))),
        ("cloud-cancel-running", call(1, get(RUNNING))),
        ("cloud-cancel-cooperative", call(1, get(COOPERATIVE))),
        (
            "cloud-cancel-not-cancellable",
            call(1, get(NOT_CANCELLABLE)),
        ),
        ("cloud-cancel-done", call(1, get(DONE))),
        ("cloud-cancel-cancelled", call(1, get(CANCELLED))),
        ("get-cooperative", call(2, get(COOPERATIVE))),
        (
            "list-page",
            call(
                3,
                pb::ListOperationsRequest {
                    page_size: 2,
                    state: pb::StateFilter::Done.into(),
                    ..Default::default()
                }
                .encode_to_vec(),
            ),
        ),
        (
            "wait-running",
            call(
                4,
                pb::WaitOperationRequest {
                    operation_id: RUNNING.into(),
                    timeout: duration(30, 0),
                }
                .encode_to_vec(),
            ),
        ),
        (
            "wait-negative",
            call(
                4,
                pb::WaitOperationRequest {
                    operation_id: DONE.into(),
                    timeout: duration(-1, 0),
                }
                .encode_to_vec(),
            ),
        ),
        ("watch-cooperative", call(5, get(COOPERATIVE))),
        (
            "create-minimal",
            create(pb::CreateOperationRequest {
                description: "snapshot disk-3".into(),
                ..Default::default()
            }),
        ),
        (
            "create-everything",
            create(pb::CreateOperationRequest {
                description: "снимок диска".into(),
                resource_id: "disk-3".into(),
                metadata: Some(struct_any()),
                cancellation_policy: pb::CancellationPolicy::Cooperative.into(),
                idempotency_key: "7d1c-key".into(),
                id_prefix: "snp".into(),
                lease_duration: duration(60, 0),
                deadline: timestamp(1_800_000_000, 0),
                exclusive: true,
                scope: "folder-a".into(),
            }),
        ),
        (
            "create-busy",
            create(pb::CreateOperationRequest {
                resource_id: "disk-1".into(),
                exclusive: true,
                ..Default::default()
            }),
        ),
        (
            "create-past-deadline",
            create(pb::CreateOperationRequest {
                deadline: timestamp(1, 0),
                ..Default::default()
            }),
        ),
        (
            "create-bad-policy",
            create(pb::CreateOperationRequest {
                cancellation_policy: 99,
                id_prefix: "1ab".into(),
                ..Default::default()
            }),
        ),
        (
            "create-unknown-payload",
            create(pb::CreateOperationRequest {
                metadata: Some(prost_types::Any {
                    type_url: "type.googleapis.com/acme.Unknown".into(),
                    value: vec![0xff, 0xff],
                }),
                ..Default::default()
            }),
        ),
        (
            "update-progress",
            call(
                7,
                pb::UpdateMetadataRequest {
                    operation_id: COOPERATIVE.into(),
                    metadata: Some(struct_any()),
                    progress: Some(pb::Progress {
                        work_done: 7,
                        work_total: 10,
                        message: "almost".into(),
                        steps: vec![pb::Step {
                            name: "copy".into(),
                            state: pb::step::State::Done.into(),
                        }],
                    }),
                }
                .encode_to_vec(),
            ),
        ),
        (
            "update-nothing",
            call(
                7,
                pb::UpdateMetadataRequest {
                    operation_id: RUNNING.into(),
                    ..Default::default()
                }
                .encode_to_vec(),
            ),
        ),
        (
            "heartbeat",
            call(
                8,
                pb::HeartbeatRequest {
                    operation_id: RUNNING.into(),
                    lease_duration: duration(10, 500),
                }
                .encode_to_vec(),
            ),
        ),
        (
            "heartbeat-lapsed",
            call(
                8,
                pb::HeartbeatRequest {
                    operation_id: COOPERATIVE.into(),
                    lease_duration: None,
                }
                .encode_to_vec(),
            ),
        ),
        (
            "heartbeat-too-long",
            call(
                8,
                pb::HeartbeatRequest {
                    operation_id: RUNNING.into(),
                    lease_duration: duration(7200, 0),
                }
                .encode_to_vec(),
            ),
        ),
        (
            "complete-response",
            call(
                9,
                pb::CompleteOperationRequest {
                    operation_id: RUNNING.into(),
                    result: Some(pb::complete_operation_request::Result::Response(
                        struct_any(),
                    )),
                }
                .encode_to_vec(),
            ),
        ),
        (
            "complete-error",
            call(
                9,
                pb::CompleteOperationRequest {
                    operation_id: COOPERATIVE.into(),
                    result: Some(pb::complete_operation_request::Result::Error(
                        opsd_proto::RpcStatus {
                            code: 8,
                            message: "out of quota".into(),
                            details: vec![struct_any()],
                        },
                    )),
                }
                .encode_to_vec(),
            ),
        ),
        (
            "complete-done-again",
            call(
                9,
                pb::CompleteOperationRequest {
                    operation_id: DONE.into(),
                    result: Some(pb::complete_operation_request::Result::Response(
                        struct_any(),
                    )),
                }
                .encode_to_vec(),
            ),
        ),
        (
            "endpoint-get",
            call(
                10,
                ycep::GetApiEndpointRequest {
                    api_endpoint_id: "operation".into(),
                }
                .encode_to_vec(),
            ),
        ),
        ("endpoint-list", call(11, vec![])),
        (
            "report-failure",
            call(
                12,
                pb::ReportFailureRequest {
                    operation_id: COOPERATIVE.into(),
                    error: Some(opsd_proto::RpcStatus {
                        code: 8,
                        message: "quota exceeded, cleaning up".into(),
                        details: vec![struct_any()],
                    }),
                }
                .encode_to_vec(),
            ),
        ),
        (
            "list-events",
            call(
                13,
                pb::ListEventsRequest {
                    operation_id: RUNNING.into(),
                    page_size: 2,
                    page_token: String::new(),
                }
                .encode_to_vec(),
            ),
        ),
        (
            "list-events-bad-token",
            call(
                13,
                pb::ListEventsRequest {
                    operation_id: DONE.into(),
                    page_size: 0,
                    page_token: "AQAAAAAAAAAB".into(),
                }
                .encode_to_vec(),
            ),
        ),
        (
            "report-failure-of-done",
            call(
                12,
                pb::ReportFailureRequest {
                    operation_id: DONE.into(),
                    error: Some(opsd_proto::RpcStatus {
                        code: 0,
                        message: String::new(),
                        details: vec![],
                    }),
                }
                .encode_to_vec(),
            ),
        ),
        ("raw-truncated-frame", vec![0x80 | 2, 0, 0, 0, 0, 9, 0x0a]),
        ("raw-compressed-flag", vec![0x80, 1, 0, 0, 0, 0]),
        ("raw-empty-body", vec![0x80 | 6]),
        ("undecodable", vec![2, 0x0a, 0x05, 0xff, 0xfe]),
        ("oversized", call(6, [0x0a, 0x00].repeat(1100))),
    ];
    seeds.sort_by_key(|(name, _)| *name);
    seeds
        .into_iter()
        .map(|(name, bytes)| (format!("seed-{name}"), bytes))
        .collect()
}

fn rest_seeds() -> Vec<(String, Vec<u8>)> {
    // Route index, options (fixture 0-5, 6 unknown id, 7 id from the text;
    // top bit: no JSON content type), then the body or query.
    let call = |route: u8, options: u8, rest: &str| {
        [vec![route, options], rest.as_bytes().to_vec()].concat()
    };
    let items: Vec<(&str, Vec<u8>)> = vec![
        ("cloud-get", call(0, 0, "")),
        (
            "cloud-get-query-id",
            call(0, 3, "operationId=fzzdone0000000000001"),
        ),
        ("cloud-get-unknown", call(0, 6, "")),
        ("cloud-get-text-id", call(0, 7, "fzz%2Frunning\n")),
        ("cloud-cancel-get", call(1, 0, "")),
        ("cloud-cancel-post", call(2, 1, "{}")),
        (
            "cloud-cancel-post-mismatch",
            call(2, 1, r#"{"operationId":"fzzdone0000000000001"}"#),
        ),
        ("list", call(3, 0, "pageSize=2&state=running")),
        ("list-bad", call(3, 0, "pageSize=-1&pageToken=%%%")),
        (
            "create",
            call(
                4,
                0,
                r#"{"description":"snapshot disk-1","cancellationPolicy":"CANCELLATION_POLICY_COOPERATIVE","metadata":{"@type":"type.googleapis.com/google.protobuf.Struct","value":{"size":"large"}},"leaseDuration":"30s","deadline":"2030-01-01T00:00:00Z","idPrefix":"snp","scope":"folder-a"}"#,
            ),
        ),
        ("create-empty", call(4, 0, "")),
        ("create-no-content-type", call(4, 0x80, "{}")),
        ("create-unknown-field", call(4, 0, r#"{"colour":"blue"}"#)),
        ("create-bad-json", call(4, 0, r#"{"description":"#)),
        (
            "create-unknown-payload",
            call(
                4,
                0,
                r#"{"metadata":{"@type":"type.googleapis.com/acme.Unknown","value":"AAE="}}"#,
            ),
        ),
        (
            "create-value-payload",
            call(
                4,
                0,
                r#"{"metadata":{"@type":"type.googleapis.com/google.protobuf.Value","value":"text"}}"#,
            ),
        ),
        ("get", call(5, 1, "")),
        ("get-failed", call(5, 4, "")),
        ("wait", call(6, 0, "timeout=5s")),
        ("wait-bad-timeout", call(6, 3, "timeout=-5s")),
        (
            "update",
            call(
                7,
                1,
                r#"{"progress":{"workDone":"3","workTotal":"10","message":"copying","steps":[{"name":"copy","state":"STATE_RUNNING"}]}}"#,
            ),
        ),
        ("update-empty", call(7, 0, "{}")),
        ("heartbeat", call(8, 1, r#"{"leaseDuration":"10s"}"#)),
        ("heartbeat-empty", call(8, 1, "")),
        (
            "complete",
            call(
                9,
                0,
                r#"{"response":{"@type":"type.googleapis.com/google.protobuf.Struct","value":{"snapshotId":"snap-1"}}}"#,
            ),
        ),
        (
            "complete-error",
            call(
                9,
                1,
                r#"{"error":{"code":9,"message":"no","details":[{"@type":"type.googleapis.com/google.protobuf.Duration","value":"1s"}]}}"#,
            ),
        ),
        ("complete-nothing", call(9, 0, "{}")),
        (
            "raw-unknown-route",
            call(10, 0, "DELETE /v1/operations/fzzrunning0000000001\n"),
        ),
        (
            "raw-verb",
            call(
                10,
                0,
                "POST /v1/operations/fzzrunning0000000001:explode\n{}",
            ),
        ),
        (
            "raw-wrong-method",
            call(10, 0, "PUT /operations/fzzrunning0000000001\n"),
        ),
        (
            "raw-report-failure",
            call(
                10,
                0,
                "POST /v1/operations/fzzrunning0000000001:reportFailure\n{\"error\":{\"code\":8,\"message\":\"quota\"}}",
            ),
        ),
        (
            "raw-events",
            call(
                10,
                0,
                "GET /v1/operations/fzzrunning0000000001/events?pageSize=1\n",
            ),
        ),
        (
            "raw-feed",
            call(
                10,
                0,
                "GET /v1/operations:watch?kinds=completed&resourceId=disk-1\n",
            ),
        ),
        (
            "raw-feed-bad-token",
            call(
                10,
                0,
                "GET /v1/operations:watch?resumeToken=zz&kinds=completed\n",
            ),
        ),
        (
            "raw-iam-tokens",
            call(10, 0, "POST /iam/v1/tokens\n{\"jwt\":\"a.b.c\"}"),
        ),
        ("raw-caller", call(10, 0, "GET /v1/caller\n")),
        (
            "raw-overview",
            call(
                10,
                0,
                "GET /v1/overview?window=3600s&stuckAfter=0.000000001s&oldest=5\n",
            ),
        ),
        (
            "raw-overview-bad",
            call(
                10,
                0,
                "GET /v1/overview?window=0s&stuckAfter=-1s&oldest=101\n",
            ),
        ),
    ];
    items
        .into_iter()
        .map(|(name, bytes)| (format!("seed-{name}"), bytes))
        .collect()
}
