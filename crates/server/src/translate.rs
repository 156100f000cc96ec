//! opsd.v1 request messages into domain values and domain values into
//! responses, and the IAM token exchange's messages: the translation the gRPC
//! and REST adapters share.

use opsd_core::list::{decode_page_token, encode_page_token, page_size};
use opsd_core::overview::{self, Overview, OverviewParams, StuckReason};
use opsd_core::principal::validate_scope;
use opsd_core::validate::Violations;
use opsd_core::{
    Cursor, Error, IdPrefix, ListFilter, ListQuery, NewOperation, Operation, Outcome, RpcStatus,
    StateFilter, Update,
};
use opsd_proto::opsd::v1 as pb;
use opsd_proto::yandex::cloud::iam::v1 as yciam;

use crate::auth::{Credential, IssuedToken};

use crate::grpc::convert::{
    any_from_wire, duration_from_wire, duration_to_wire, non_empty, operation_to_opsd_wire,
    policy_from_wire, progress_from_wire, status_from_wire, timestamp, timestamp_from_wire,
};

/// The listing a request asks for; bad sizes, tokens and filters are INVALID_ARGUMENT.
pub fn list_query(body: pb::ListOperationsRequest) -> Result<ListQuery, Error> {
    let state = match pb::StateFilter::try_from(body.state) {
        Ok(pb::StateFilter::Unspecified | pb::StateFilter::Any) => StateFilter::Any,
        Ok(pb::StateFilter::Running) => StateFilter::Running,
        Ok(pb::StateFilter::Done) => StateFilter::Done,
        Err(_) => return Err(Error::invalid_argument("state", "unknown state filter")),
    };
    let filter = ListFilter {
        resource_id: non_empty(body.resource_id),
        created_by: non_empty(body.created_by),
        state,
        created_after: body
            .created_after
            .map(|t| timestamp_from_wire("created_after", t))
            .transpose()?,
        created_before: body
            .created_before
            .map(|t| timestamp_from_wire("created_before", t))
            .transpose()?,
        scopes: non_empty(body.scope).map(|scope| [scope].into()),
        id_prefix: non_empty(body.id_prefix),
        description_contains: non_empty(body.description_contains),
    };
    // Filters reach SQL: refuse what no stored value can be, instead of letting
    // the database fail (retryably) on it.
    let mut violations = Violations::default();
    if let Some(resource_id) = &filter.resource_id {
        violations.resource_id("resource_id", resource_id);
    }
    if let Some(created_by) = &filter.created_by {
        violations.resource_id("created_by", created_by);
    }
    for scope in filter.scopes.iter().flatten() {
        violations.merge(validate_scope("scope", scope));
    }
    if let Some(prefix) = &filter.id_prefix {
        violations.id_prefix_filter("id_prefix", prefix);
    }
    if let Some(text) = &filter.description_contains {
        violations.description_search("description_contains", text);
    }
    violations.into_result()?;
    let limit = page_size(i64::from(body.page_size))?;
    let after = non_empty(body.page_token)
        .map(|token| decode_page_token(&filter, &token))
        .transpose()?;
    Ok(ListQuery {
        filter,
        after,
        limit,
    })
}

/// A page; a full one links to the next.
pub fn list_response(query: &ListQuery, page: &[Operation]) -> pb::ListOperationsResponse {
    let next_page_token = match page.last() {
        Some(last) if page.len() == query.limit => {
            encode_page_token(&query.filter, &Cursor::of(last))
        }
        _ => String::new(),
    };
    pb::ListOperationsResponse {
        operations: page.iter().map(operation_to_opsd_wire).collect(),
        next_page_token,
    }
}

/// A create request; `header_key` is the `idempotency-key` header, which must
/// agree with the field when both are given.
pub fn new_operation(
    body: pb::CreateOperationRequest,
    header_key: Option<String>,
) -> Result<NewOperation, Error> {
    let idempotency_key = match (non_empty(body.idempotency_key), header_key) {
        (Some(field), Some(header)) if field != header => {
            return Err(Error::invalid_argument(
                "idempotency_key",
                "differs from the idempotency-key header",
            ));
        }
        (field, header) => field.or(header),
    };
    let cancellation = policy_from_wire(body.cancellation_policy).ok_or_else(|| {
        Error::invalid_argument("cancellation_policy", "unknown cancellation policy")
    })?;
    let id_prefix = non_empty(body.id_prefix)
        .map(|p| IdPrefix::parse("id_prefix", &p))
        .transpose()?;
    let lease_duration = body
        .lease_duration
        .map(|d| duration_from_wire("lease_duration", d))
        .transpose()?;
    let deadline = body
        .deadline
        .map(|t| timestamp_from_wire("deadline", t))
        .transpose()?;
    Ok(NewOperation {
        description: body.description,
        resource_id: non_empty(body.resource_id),
        metadata: body.metadata.map(any_from_wire),
        cancellation,
        idempotency_key,
        id_prefix,
        lease_duration,
        deadline,
        exclusive: body.exclusive,
        scope: non_empty(body.scope),
        // The service takes it from the call, not from the body.
        trace: None,
    })
}

/// A producer's progress report.
pub fn update(body: pb::UpdateMetadataRequest) -> Result<Update, Error> {
    Ok(Update {
        metadata: body.metadata.map(any_from_wire),
        progress: body.progress.map(progress_from_wire).transpose()?,
    })
}

/// How a producer completes an operation; `None` completes it with the
/// failure it reported (refused when it reported none).
pub fn outcome(result: Option<pb::complete_operation_request::Result>) -> Option<Outcome> {
    use pb::complete_operation_request::Result as Wire;
    result.map(|result| match result {
        Wire::Response(any) => Outcome::Response(any_from_wire(any)),
        Wire::Error(status) => Outcome::Error(status_from_wire(status)),
    })
}

/// The failure a producer reports on a running operation.
pub fn reported_failure(body: pb::ReportFailureRequest) -> Result<RpcStatus, Error> {
    body.error
        .map(status_from_wire)
        .ok_or_else(|| Error::invalid_argument("error", "is required"))
}

/// The answer to a heartbeat.
pub fn heartbeat_response(op: &Operation) -> pb::HeartbeatResponse {
    pb::HeartbeatResponse {
        cancel_requested: op.cancel_requested_at().is_some(),
        lease_expires_at: op.lease_expires_at.map(timestamp),
        operation: Some(operation_to_opsd_wire(op)),
    }
}

/// Where a ListEvents page starts (after this sequence) and how long it is.
pub fn events_page(
    id: &opsd_core::OperationId,
    body: &pb::ListEventsRequest,
) -> Result<(u64, usize), Error> {
    let limit = page_size(i64::from(body.page_size))?;
    let after = match non_empty(body.page_token.clone()) {
        Some(token) => opsd_core::event::decode_event_page_token(id, &token)?,
        None => 0,
    };
    Ok((after, limit))
}

/// A page of events; a full one links to the next.
pub fn events_response(
    id: &opsd_core::OperationId,
    limit: usize,
    events: &[opsd_core::Event],
) -> pb::ListEventsResponse {
    let next_page_token = match events.last() {
        Some(last) if events.len() == limit => {
            opsd_core::event::encode_event_page_token(id, last.sequence)
        }
        _ => String::new(),
    };
    pb::ListEventsResponse {
        events: events.iter().map(event_to_wire).collect(),
        next_page_token,
    }
}

pub fn event_kind_to_wire(kind: opsd_core::EventKind) -> pb::EventKind {
    pb::EventKind::try_from(kind.number()).unwrap_or(pb::EventKind::Unspecified)
}

pub fn event_to_wire(event: &opsd_core::Event) -> pb::Event {
    use crate::grpc::convert::{progress_to_wire, status_to_wire};
    let details = &event.details;
    pb::Event {
        operation_id: event.operation_id.to_string(),
        sequence: i64::try_from(event.sequence).unwrap_or(i64::MAX),
        time: Some(timestamp(event.at)),
        kind: event_kind_to_wire(event.kind).into(),
        actor: event.actor.clone(),
        version: i64::try_from(event.version).unwrap_or(i64::MAX),
        scope: event.scope.clone(),
        resource_id: event.resource_id.clone().unwrap_or_default(),
        created_by: event.created_by.clone(),
        folded: i64::try_from(event.folded).unwrap_or(i64::MAX),
        description: details.description.clone().unwrap_or_default(),
        lease_expires_at: details.lease_expires_at.map(timestamp),
        deadline: details.deadline.map(timestamp),
        metadata_type_url: details.metadata_type_url.clone().unwrap_or_default(),
        progress: details.progress.as_ref().map(progress_to_wire),
        error: details.error.as_ref().map(status_to_wire),
        response_type_url: details.response_type_url.clone().unwrap_or_default(),
        trace_id: event
            .trace
            .map(|span| span.trace_id_hex())
            .unwrap_or_default(),
        span_id: event
            .trace
            .map(|span| span.span_id_hex())
            .unwrap_or_default(),
    }
}

/// One message of the change feed: the event and the token to resume after it.
pub fn feed_message(event: &opsd_core::Event) -> pb::WatchOperationsResponse {
    pb::WatchOperationsResponse {
        event: Some(event_to_wire(event)),
        resume_token: opsd_core::event::encode_resume_token(event.position),
    }
}

/// The filter and starting position a WatchOperations request asks for.
pub fn feed_request(
    body: &pb::WatchOperationsRequest,
) -> Result<(opsd_core::EventFilter, Option<u64>), Error> {
    let mut violations = Violations::default();
    let scope = non_empty(body.scope.clone());
    if let Some(scope) = &scope {
        violations.merge(validate_scope("scope", scope));
    }
    let resource_id = non_empty(body.resource_id.clone());
    if let Some(resource_id) = &resource_id {
        violations.resource_id("resource_id", resource_id);
    }
    let created_by = non_empty(body.created_by.clone());
    if let Some(created_by) = &created_by {
        violations.resource_id("created_by", created_by);
    }
    let id_prefix = non_empty(body.id_prefix.clone());
    if let Some(prefix) = &id_prefix {
        violations.id_prefix_filter("id_prefix", prefix);
    }
    let mut kinds = std::collections::BTreeSet::new();
    for (i, raw) in body.kinds.iter().enumerate() {
        match opsd_core::EventKind::from_number(*raw) {
            Some(kind) => {
                kinds.insert(kind);
            }
            None => violations.add(format!("kinds[{i}]"), "unknown event kind"),
        }
    }
    violations.into_result()?;
    let resume = non_empty(body.resume_token.clone())
        .map(|token| opsd_core::event::decode_resume_token("resume_token", &token))
        .transpose()?;
    Ok((
        opsd_core::EventFilter {
            scopes: scope.map(|scope| [scope].into()),
            resource_id,
            created_by,
            id_prefix,
            kinds: (!kinds.is_empty()).then_some(kinds),
        },
        resume,
    ))
}

/// The longest `yandex_passport_oauth_token` and `jwt` the clouds accept.
pub const MAX_OAUTH_TOKEN_CHARS: usize = 4000;
pub const MAX_JWT_CHARS: usize = 8000;

/// What an `IamTokenService/Create` request offers: exactly one identity,
/// within the clouds' lengths.
pub fn iam_credential(request: &yciam::CreateIamTokenRequest) -> Result<Credential<'_>, Error> {
    use yciam::create_iam_token_request::Identity;
    let too_long = |field: &str, max: usize| {
        Error::invalid_argument(field, format!("must be at most {max} characters"))
    };
    match &request.identity {
        Some(Identity::YandexPassportOauthToken(token)) => {
            if token.chars().count() > MAX_OAUTH_TOKEN_CHARS {
                return Err(too_long(
                    "yandex_passport_oauth_token",
                    MAX_OAUTH_TOKEN_CHARS,
                ));
            }
            Ok(Credential::OauthToken(token))
        }
        Some(Identity::Jwt(jwt)) => {
            if jwt.chars().count() > MAX_JWT_CHARS {
                return Err(too_long("jwt", MAX_JWT_CHARS));
            }
            Ok(Credential::Jwt(jwt))
        }
        None => Err(Error::invalid_argument(
            "identity",
            "one of yandex_passport_oauth_token or jwt is required",
        )),
    }
}

/// The answer to a successful exchange.
pub fn iam_token_response(issued: IssuedToken) -> yciam::CreateIamTokenResponse {
    yciam::CreateIamTokenResponse {
        iam_token: issued.token,
        expires_at: Some(timestamp(issued.expires_at)),
    }
}

/// The overview a request asks for, with the server's stuck threshold as the default.
pub fn overview_params(
    body: pb::GetOverviewRequest,
    server_stuck_after: std::time::Duration,
) -> Result<OverviewParams, Error> {
    let window = body
        .window
        .map(|d| duration_from_wire("window", d))
        .transpose()?;
    let stuck_after = body
        .stuck_after
        .map(|d| duration_from_wire("stuck_after", d))
        .transpose()?;
    OverviewParams::resolve(window, stuck_after, body.oldest, server_stuck_after)
}

fn stuck_reason_to_wire(reason: &StuckReason) -> pb::StuckReason {
    use pb::stuck_reason::Rule;
    let rule = match *reason {
        StuckReason::Unchanged { quiet, threshold } => {
            Rule::Unchanged(pb::stuck_reason::Unchanged {
                quiet: Some(duration_to_wire(quiet)),
                threshold: Some(duration_to_wire(threshold)),
            })
        }
        StuckReason::SlowerThanUsual {
            quiet,
            typical_gap,
            factor,
            threshold,
        } => Rule::SlowerThanUsual(pb::stuck_reason::SlowerThanUsual {
            quiet: Some(duration_to_wire(quiet)),
            typical_gap: Some(duration_to_wire(typical_gap)),
            factor,
            threshold: Some(duration_to_wire(threshold)),
        }),
        StuckReason::LeaseLapsing { lapses_in, warning } => {
            Rule::LeaseLapsing(pb::stuck_reason::LeaseLapsing {
                lapses_in: Some(duration_to_wire(lapses_in)),
                warning: Some(duration_to_wire(warning)),
            })
        }
    };
    pb::StuckReason { rule: Some(rule) }
}

fn count(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

pub fn overview_response(overview: &Overview) -> pb::GetOverviewResponse {
    pb::GetOverviewResponse {
        now: Some(timestamp(overview.now)),
        window: Some(duration_to_wire(overview.window)),
        stuck_after: Some(duration_to_wire(overview.stuck_after)),
        running: count(overview.running),
        oldest_running: overview.oldest.iter().map(operation_to_opsd_wire).collect(),
        stuck: overview
            .stuck
            .iter()
            .map(|stuck| pb::StuckOperation {
                operation: Some(operation_to_opsd_wire(&stuck.operation)),
                reasons: stuck.reasons.iter().map(stuck_reason_to_wire).collect(),
            })
            .collect(),
        stuck_count: count(overview.stuck_count),
        stuck_truncated: overview.stuck_truncated,
        producers: overview
            .producers
            .iter()
            .map(|p| pb::ProducerOverview {
                id_prefix: p.prefix.clone(),
                running: count(p.running),
                completed: count(p.completed),
                failed: count(p.failed),
                cancelled: count(p.cancelled),
                p50_to_done: p.p50.map(duration_to_wire),
                p99_to_done: p.p99.map(duration_to_wire),
                p50_cancel_to_done: p.cancel_p50.map(duration_to_wire),
                cancel_overdue: count(p.cancel_overdue),
                typical_gap: p.typical_gap.map(duration_to_wire),
                sample_size: count(p.sample_size),
            })
            .collect(),
        sampled: overview.sampled,
        sample_size: count(overview.sample_size),
        stuck_gap_factor: overview::STUCK_GAP_FACTOR,
        stuck_gap_floor: Some(duration_to_wire(overview::STUCK_GAP_FLOOR)),
        lease_warning: Some(duration_to_wire(overview::LEASE_WARNING)),
    }
}
