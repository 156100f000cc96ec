//! The targets, and what they share.

mod config;
mod grpc;
mod iam;
mod id;
mod list_query;
mod page_token;
mod rest;

use opsd_core::{Operation, OperationId, Timestamp};
use opsd_proto::opsd::v1 as pb;
use opsd_proto::yandex::cloud::operation as ycop;

use crate::Target;

pub static ALL: &[Target] = &[
    Target {
        name: "id",
        about: "operation ids and id prefixes: parse exactly the alphabet, print back the same; refusals are INVALID_ARGUMENT naming the field",
        run: id::run,
        dictionary: id::DICTIONARY,
    },
    Target {
        name: "page_token",
        about: "page tokens under fuzzed filters: a token that decodes re-encodes to itself and is refused under other filters; cursors round-trip; refusals are INVALID_ARGUMENT on page_token",
        run: page_token::run,
        dictionary: page_token::DICTIONARY,
    },
    Target {
        name: "list_query",
        about: "List requests (protobuf and REST query strings) through the shared translation, run on SQLite and memory and compared with a brute-force listing of the fixtures",
        run: list_query::run,
        dictionary: list_query::DICTIONARY,
    },
    Target {
        name: "grpc",
        about: "gRPC request bytes through the real router (tonic decoding, interceptor, handlers, service, store) for every method: status codes a caller may see, answers equal to the domain's, refusals change nothing",
        run: grpc::run,
        dictionary: grpc::DICTIONARY,
    },
    Target {
        name: "rest",
        about: "REST requests (JSON bodies, paths, query strings) through the real gateway: never a 5xx, errors as google.rpc.Status JSON with the matching HTTP status, the same answer as the gRPC adapter",
        run: rest::run,
        dictionary: rest::DICTIONARY,
    },
    Target {
        name: "iam",
        about: "the IAM token exchange and issued tokens through the real authenticator: any string, and claims of any shape signed with the service-account key or the IAM signing key; what is accepted obeys the documented rules, refusals give a documented reason and quote no signature",
        run: iam::run,
        dictionary: iam::DICTIONARY,
    },
    Target {
        name: "config",
        about: "configuration files through the loader: a file that loads prints back (--print-config) to a file that loads the same; refusals name the file",
        run: config::run,
        dictionary: config::DICTIONARY,
    },
];

/// The `iam` target's tokens-file token and service account, for its seeds.
pub fn iam_known_token() -> &'static str {
    iam::KNOWN_TOKEN
}

pub fn iam_account() -> &'static str {
    iam::ACCOUNT
}

/// Reads fixed-size values off the front of an input; past its end, zeros.
pub struct Reader<'a> {
    data: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Self { data }
    }

    pub fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    pub fn bytes(&mut self, len: usize) -> &'a [u8] {
        let (taken, rest) = self.data.split_at(len.min(self.data.len()));
        self.data = rest;
        taken
    }

    pub fn i64(&mut self) -> i64 {
        let mut bytes = [0u8; 8];
        for b in &mut bytes {
            *b = self.byte();
        }
        i64::from_be_bytes(bytes)
    }

    pub fn rest(self) -> &'a [u8] {
        self.data
    }
}

/// What holds for a gRPC error any caller may see: a code opsd answers with,
/// a lowercase message without trailing punctuation, and for INVALID_ARGUMENT
/// a google.rpc.BadRequest naming at least one field.
pub fn check_status(status: &tonic::Status) -> String {
    use tonic::Code;
    use tonic_types::StatusExt;
    let code = status.code();
    assert!(
        matches!(
            code,
            Code::Ok
                | Code::InvalidArgument
                | Code::NotFound
                | Code::FailedPrecondition
                | Code::Aborted
                | Code::ResourceExhausted
        ),
        "a caller may not see {code:?}: {status:?}"
    );
    if code == Code::Ok {
        return "OK".to_owned();
    }
    let message = status.message();
    assert!(!message.is_empty(), "{status:?}");
    let name = opsd_proto::grpc_code_name(code);
    if code == Code::InvalidArgument {
        let details = status.get_error_details();
        let violations = details
            .bad_request()
            .map(|b| b.field_violations.clone())
            .unwrap_or_default();
        assert!(
            !violations.is_empty() && violations.iter().all(|v| !v.field.is_empty()),
            "INVALID_ARGUMENT names the fields: {status:?}"
        );
        for v in &violations {
            assert!(
                !v.description.starts_with(|c: char| c.is_uppercase())
                    && !v.description.ends_with('.'),
                "descriptions are lowercase without a trailing period: {status:?}"
            );
        }
        return format!("{name}:{}", violations[0].field);
    }
    assert!(
        !message.starts_with(|c: char| c.is_uppercase()),
        "messages are lowercase: {message:?}"
    );
    assert!(!message.ends_with('.'), "no trailing period: {message:?}");
    name.to_owned()
}

/// What holds for an operation in the clouds' shape, whatever it went through.
pub fn check_cloud_operation(op: &ycop::Operation) {
    assert!(
        OperationId::parse("id", &op.id).is_ok(),
        "ids are well formed: {:?}",
        op.id
    );
    // Done: exactly one result. Running: no response, perhaps a reported failure.
    if op.done {
        assert!(op.result.is_some(), "done exactly with a result");
    } else {
        assert!(
            !matches!(op.result, Some(ycop::operation::Result::Response(_))),
            "a running operation has no response"
        );
    }
    let time = |t: &Option<prost_types::Timestamp>| {
        let t = t.expect("times are set");
        Timestamp::from_seconds_and_nanos(t.seconds, t.nanos).expect("times are valid")
    };
    assert!(time(&op.created_at) <= time(&op.modified_at));
    assert!(op.description.chars().count() <= 256);
}

/// The same for opsd's shape, and its state agreeing with `done`.
pub fn check_opsd_operation(op: &pb::Operation) {
    let cloud = op.operation.as_ref().expect("the cloud part is set");
    check_cloud_operation(cloud);
    let state = pb::OperationState::try_from(op.state).expect("a known state");
    assert_eq!(cloud.done, state == pb::OperationState::Done);
    if !cloud.done {
        let shown = match &cloud.result {
            Some(ycop::operation::Result::Error(status)) => Some(status),
            _ => None,
        };
        assert_eq!(
            shown,
            op.reported_failure.as_ref(),
            "a running operation shows exactly its reported failure"
        );
    }
    assert_eq!(
        op.reported_failure.is_some(),
        op.failure_reported_at.is_some(),
        "a reported failure has its time"
    );
    if state == pb::OperationState::CancelRequested {
        assert!(op.cancel_requested_at.is_some());
    }
}

/// Every answer must print in the proto3 JSON mapping (REST prints it so),
/// and JSON that parses back must print the same again. (Not the same bytes:
/// a payload's unknown fields and non-canonical encodings have no JSON form.)
pub fn check_json<M: prost::Name + Default + PartialEq + std::fmt::Debug>(message: &M) {
    let json = opsd_proto::json::to_json(message)
        .unwrap_or_else(|e| panic!("cannot print {message:?} as json: {e}"));
    if let Ok(back) = opsd_proto::json::from_json::<M>(&json.to_string()) {
        let again = opsd_proto::json::to_json(&back).expect("a parsed message prints");
        assert_eq!(
            again, json,
            "json reads back to a message that prints differently"
        );
    }
}

/// The fixtures in a new place: refusals must leave the store as it was.
pub fn assert_unchanged(stored: &[Operation], fixtures: &[Operation]) {
    let mut stored = stored.to_vec();
    let mut fixtures = fixtures.to_vec();
    stored.sort_by(|a, b| a.id.cmp(&b.id));
    fixtures.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(stored, fixtures, "a refused request changed the store");
}
