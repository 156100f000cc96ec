//! List requests (protobuf, or a REST query string) through the translation
//! both adapters share, then run against SQLite and memory, and checked
//! against a listing computed here by brute force.

use std::cell::RefCell;
use std::sync::Arc;

use opsd_core::list::decode_page_token;
use opsd_core::{
    Any, CancellationPolicy, Code, Cursor, Error, ListQuery, NewOperation, Operation, OperationId,
    Outcome, RpcStatus, Timestamp, Transition,
};
use opsd_proto::opsd::v1 as pb;
use opsd_server::translate;
use opsd_store::{Inserted, MemoryStore, OperationStore, SqliteOptions, SqliteStore, Swapped};
use prost::Message;

pub const DICTIONARY: &[&[u8]] = &[
    b"pageSize=",
    b"pageToken=",
    b"state=",
    b"resourceId=",
    b"createdBy=",
    b"createdAfter=",
    b"createdBefore=",
    b"scope=",
    b"idPrefix=",
    b"descriptionContains=",
    b"%C3%84",
    b"%25",
    b"_",
    b"%5C",
    b"running",
    b"DONE",
    b"STATE_FILTER_ANY",
    b"disk-1",
    b"alice",
    b"folder-a",
    b"default",
    b"2024-01-01T00:00:00Z",
    b"1970-01-01T00:00:00.000000001Z",
    b"9999-12-31T23:59:59Z",
    b"&",
    b"%00",
    b"%FF",
    b"%",
    b"+",
    // protobuf keys of ListOperationsRequest: varint and length-delimited fields
    b"\x08",
    b"\x10",
    b"\x12",
    b"\x1a",
    b"\x22",
    b"\x2a",
    b"\x32",
    b"\x3a",
    b"\x42",
    b"\x4a",
    b"\x52",
    b"\xff\xff\xff\xff\x0f",
    b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01",
];

/// The start of the fixtures' time line.
const T0: i64 = 1_700_000_000_000_000_000;

struct Fixture {
    runtime: tokio::runtime::Runtime,
    operations: Vec<Operation>,
    memory: Arc<dyn OperationStore>,
    sqlite: Arc<dyn OperationStore>,
    _dir: tempfile::TempDir,
}

thread_local! {
    static FIXTURE: RefCell<Option<Fixture>> = const { RefCell::new(None) };
}

/// Forty operations that differ in every filtered field, some created at the
/// same instant (the id breaks the tie).
fn operations() -> Vec<Operation> {
    let resources = [
        None,
        Some("disk-1"),
        Some("disk-2"),
        Some("диск 3"),
        Some(""),
    ];
    let creators = ["alice", "bob", "anonymous", "svc.producer"];
    let scopes = ["default", "folder-a", "folder-b", "f_1.x-y"];
    let mut ops = Vec::new();
    for i in 0..40u32 {
        let id = format!(
            "{:0>3}{:0>17}",
            ["ops", "fhm", "snp"][(i % 3) as usize],
            i * 7919
        );
        let id = OperationId::parse("id", &id).expect("fixture ids are valid");
        let created_at = Timestamp::from_unix_nanos(T0 + i64::from(i / 2) * 1_000_000_000);
        // Cases and wildcards for the description search.
        let description = ["Fixture", "ÄRGER ärger", r"50%_\ done", "ΣΟΦΊΑ"][(i % 4) as usize];
        let mut request = NewOperation::new(format!("{description} {i}"));
        request.resource_id = resources[(i % 5) as usize].map(str::to_owned);
        request.cancellation = if i % 2 == 0 {
            CancellationPolicy::Immediate
        } else {
            CancellationPolicy::Cooperative
        };
        request.scope = Some(scopes[(i % 4) as usize].to_owned());
        let mut op = Operation::create(id, request, creators[(i % 4) as usize], created_at);
        let later = created_at.saturating_add(std::time::Duration::from_secs(1));
        let next = match i % 3 {
            1 => op.cancel(later).expect("a running operation cancels"),
            2 => op
                .complete(
                    if i % 2 == 0 {
                        Outcome::Response(Any {
                            type_url: "type.googleapis.com/google.protobuf.Empty".into(),
                            value: vec![],
                        })
                    } else {
                        Outcome::Error(RpcStatus {
                            code: 9,
                            message: "failed".into(),
                            details: vec![],
                        })
                    },
                    later,
                )
                .expect("a running operation completes"),
            _ => Transition::Unchanged,
        };
        if let Transition::Changed(next, _) = next {
            op = next;
        }
        ops.push(op);
    }
    ops
}

fn with_fixture<R>(f: impl FnOnce(&Fixture) -> R) -> R {
    FIXTURE.with(|cell| {
        let mut cell = cell.borrow_mut();
        let fixture = cell.get_or_insert_with(|| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            let dir = tempfile::tempdir().expect("a temporary directory");
            let operations = operations();
            let (memory, sqlite) = runtime.block_on(async {
                let memory: Arc<dyn OperationStore> = Arc::new(MemoryStore::new());
                let sqlite: Arc<dyn OperationStore> = Arc::new(
                    SqliteStore::open(SqliteOptions::new(dir.path().join("fuzz.db")))
                        .expect("sqlite opens"),
                );
                for store in [&memory, &sqlite] {
                    for op in &operations {
                        // Stored as version 1, then moved to the fixture's version.
                        let first = Operation {
                            version: 1,
                            state: opsd_core::State::Running,
                            modified_at: op.created_at,
                            ..op.clone()
                        };
                        assert_eq!(
                            store
                                .insert(&first, &opsd_store::conformance::created(&first))
                                .await
                                .unwrap(),
                            Inserted::Created
                        );
                        if op.version == 2 {
                            assert_eq!(
                                store
                                    .compare_and_swap(
                                        op,
                                        Some(&opsd_store::conformance::changed(op))
                                    )
                                    .await
                                    .unwrap(),
                                Swapped::Swapped
                            );
                        }
                    }
                }
                (memory, sqlite)
            });
            Fixture {
                runtime,
                operations,
                memory,
                sqlite,
                _dir: dir,
            }
        });
        f(fixture)
    })
}

/// Fields a List refusal may name.
const FIELDS: &[&str] = &[
    "state",
    "resource_id",
    "created_by",
    "created_after",
    "created_before",
    "scope",
    "page_size",
    "page_token",
    "id_prefix",
    "description_contains",
    // REST: query parameters by their JSON names
    "query",
    "pageSize",
    "pageToken",
    "resourceId",
    "createdBy",
    "createdAfter",
    "createdBefore",
    "idPrefix",
    "descriptionContains",
];

fn check_refusal(error: &Error) -> String {
    assert_eq!(error.code(), Code::InvalidArgument, "{error:?}");
    let Error::InvalidArgument(violations) = error else {
        unreachable!()
    };
    assert!(!violations.is_empty());
    for v in violations {
        assert!(
            FIELDS.contains(&v.field.as_str()),
            "unexpected field in {error:?}"
        );
    }
    violations[0].field.clone()
}

/// The page the query asks for, by brute force over the fixtures.
fn expected(operations: &[Operation], query: &ListQuery) -> Vec<Operation> {
    let mut matching: Vec<Operation> = operations
        .iter()
        .filter(|op| query.filter.matches(op))
        .filter(|op| query.after.as_ref().is_none_or(|c| c.precedes(op)))
        .cloned()
        .collect();
    matching.sort_by(|a, b| (b.created_at, &b.id).cmp(&(a.created_at, &a.id)));
    matching.truncate(query.limit);
    matching
}

fn list(fixture: &Fixture, query: &ListQuery) -> String {
    let want = expected(&fixture.operations, query);
    let (memory, sqlite) = fixture.runtime.block_on(async {
        (
            fixture.memory.list(query).await,
            fixture.sqlite.list(query).await,
        )
    });
    let memory = memory.expect("memory lists any valid query");
    let sqlite = sqlite.unwrap_or_else(|e| panic!("sqlite refused a valid query {query:?}: {e}"));
    assert_eq!(memory, want, "memory store listing for {query:?}");
    assert_eq!(sqlite, want, "sqlite store listing for {query:?}");
    let response = translate::list_response(query, &sqlite);
    if response.next_page_token.is_empty() {
        assert!(sqlite.len() < query.limit, "a full page links to the next");
    } else {
        let cursor = decode_page_token(&query.filter, &response.next_page_token)
            .expect("the next page token decodes");
        assert_eq!(Some(cursor), sqlite.last().map(Cursor::of));
    }
    match want.len() {
        0 => "empty".to_owned(),
        n if n == query.limit => "full".to_owned(),
        _ => "partial".to_owned(),
    }
}

pub fn run(data: &[u8]) -> String {
    let Some((&mode, rest)) = data.split_first() else {
        return "empty-input".to_owned();
    };
    let (source, request) = if mode % 2 == 0 {
        match pb::ListOperationsRequest::decode(rest) {
            Ok(request) => ("proto", request),
            Err(_) => return "proto:undecodable".to_owned(),
        }
    } else {
        let query = String::from_utf8_lossy(rest);
        let Ok(uri) = format!("/v1/operations?{query}").parse::<http::Uri>() else {
            return "query:not-a-uri".to_owned();
        };
        match opsd_server::rest::list_request(&uri) {
            Ok(request) => ("query", request),
            Err(error) => {
                let status = error.status();
                assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
                return "query:refused".to_owned();
            }
        }
    };
    let token = request.page_token.clone();
    match translate::list_query(request) {
        Ok(query) => {
            assert!((1..=1000).contains(&query.limit));
            assert_eq!(query.after.is_some(), !token.is_empty());
            if let Some(after) = &query.after {
                assert_eq!(
                    opsd_core::list::encode_page_token(&query.filter, after),
                    token,
                    "an accepted token re-encodes to itself"
                );
            }
            format!("{source}:{}", with_fixture(|f| list(f, &query)))
        }
        Err(error) => format!("{source}:refused:{}", check_refusal(&error)),
    }
}
