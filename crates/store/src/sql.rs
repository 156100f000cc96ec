//! SQL shared by the SQL backends, written once with backend-specific placeholders.

use std::collections::BTreeSet;

use opsd_core::overview::{
    DoneCount, DoneSample, OverviewQuery, OverviewRows, ProgressQuery, ProgressSample, RunningCount,
};
use opsd_core::{EventKind, ListQuery, Operation, OperationId, StateFilter, Timestamp};

use crate::StoreError;

use crate::record::{COLUMNS, STATE_DONE};

/// A bound parameter of a generated statement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Param {
    Text(String),
    Int(i64),
}

/// `column IN (values)`; no value at all matches nothing (`IN ()` is not valid SQL).
fn one_of(column: &str, values: &[String]) -> String {
    if values.is_empty() {
        "FALSE".to_owned()
    } else {
        format!("{column} IN ({})", values.join(", "))
    }
}

/// How a backend applies `ListFilter::description_contains`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DescriptionSearch<'a> {
    /// In the statement, through this SQL function of (description, text),
    /// which the backend registers to run `opsd_core::list::description_matches`.
    Function(&'a str),
    /// Not in the statement: the backend filters the rows it reads.
    Omit,
}

/// `[from, to)` of the ids starting with `prefix`, as conditions on `column`:
/// a range of the primary key, without LIKE's escapes.
fn id_prefix_range(
    column: &str,
    prefix: &str,
    params: &mut Vec<Param>,
    bind: impl Fn(Param, &mut Vec<Param>) -> String,
) -> String {
    let from = bind(Param::Text(prefix.to_owned()), params);
    match opsd_core::list::id_prefix_end(prefix) {
        Some(end) => {
            let to = bind(Param::Text(end), params);
            format!("{column} >= {from} AND {column} < {to}")
        }
        None => format!("{column} >= {from}"),
    }
}

/// `SELECT` for one page of a listing. Only the filters present appear in the
/// statement, so each combination is a plain indexed range scan: by
/// (created_at, id), or (resource_id, created_at, id), or (created_by, created_at, id),
/// or the primary key's range for an id prefix; the description search only
/// filters the rows those select.
pub fn list(
    query: &ListQuery,
    description: DescriptionSearch<'_>,
    placeholder: impl Fn(usize) -> String,
) -> (String, Vec<Param>) {
    let mut conditions = Vec::new();
    let mut params = Vec::new();
    let bind = |param: Param, params: &mut Vec<Param>| {
        params.push(param);
        placeholder(params.len())
    };
    let filter = &query.filter;
    if let Some(resource_id) = &filter.resource_id {
        let p = bind(Param::Text(resource_id.clone()), &mut params);
        conditions.push(format!("resource_id = {p}"));
    }
    if let Some(created_by) = &filter.created_by {
        let p = bind(Param::Text(created_by.clone()), &mut params);
        conditions.push(format!("created_by = {p}"));
    }
    match filter.state {
        StateFilter::Any => {}
        StateFilter::Running => conditions.push(format!("state != {STATE_DONE}")),
        StateFilter::Done => conditions.push(format!("state = {STATE_DONE}")),
    }
    if let Some(scopes) = &filter.scopes {
        let placeholders: Vec<String> = scopes
            .iter()
            .map(|scope| bind(Param::Text(scope.clone()), &mut params))
            .collect();
        conditions.push(one_of("scope", &placeholders));
    }
    if let Some(prefix) = &filter.id_prefix {
        conditions.push(id_prefix_range("id", prefix, &mut params, bind));
    }
    if let (Some(text), DescriptionSearch::Function(function)) =
        (&filter.description_contains, description)
    {
        let p = bind(Param::Text(text.clone()), &mut params);
        conditions.push(format!("{function}(description, {p})"));
    }
    if let Some(after) = filter.created_after {
        let p = bind(Param::Int(after.unix_nanos()), &mut params);
        conditions.push(format!("created_at >= {p}"));
    }
    if let Some(before) = filter.created_before {
        let p = bind(Param::Int(before.unix_nanos()), &mut params);
        conditions.push(format!("created_at < {p}"));
    }
    if let Some(cursor) = &query.after {
        let at = bind(Param::Int(cursor.created_at.unix_nanos()), &mut params);
        let id = bind(Param::Text(cursor.id.to_string()), &mut params);
        conditions.push(format!("(created_at, id) < ({at}, {id})"));
    }
    let limit = bind(
        Param::Int(i64::try_from(query.limit).unwrap_or(i64::MAX)),
        &mut params,
    );
    let filter = if conditions.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", conditions.join(" AND "))
    };
    (
        format!(
            "SELECT {COLUMNS} FROM operations {filter} ORDER BY created_at DESC, id DESC LIMIT {limit}"
        ),
        params,
    )
}

/// The running exclusive operation on a resource.
pub fn running_exclusive(placeholder: &str) -> String {
    format!(
        "SELECT {COLUMNS} FROM operations WHERE resource_id = {placeholder} \
         AND exclusive = 1 AND state != {STATE_DONE}"
    )
}

/// `SELECT` for a page of the change feed after a position.
pub fn feed(
    after: u64,
    filter: &opsd_core::EventFilter,
    limit: usize,
    placeholder: impl Fn(usize) -> String,
) -> (String, Vec<Param>) {
    let mut conditions = Vec::new();
    let mut params = Vec::new();
    let bind = |param: Param, params: &mut Vec<Param>| {
        params.push(param);
        placeholder(params.len())
    };
    let p = bind(
        Param::Int(i64::try_from(after).unwrap_or(i64::MAX)),
        &mut params,
    );
    conditions.push(format!("position > {p}"));
    if let Some(scopes) = &filter.scopes {
        let placeholders: Vec<String> = scopes
            .iter()
            .map(|scope| bind(Param::Text(scope.clone()), &mut params))
            .collect();
        conditions.push(one_of("scope", &placeholders));
    }
    if let Some(resource_id) = &filter.resource_id {
        let p = bind(Param::Text(resource_id.clone()), &mut params);
        conditions.push(format!("resource_id = {p}"));
    }
    if let Some(created_by) = &filter.created_by {
        let p = bind(Param::Text(created_by.clone()), &mut params);
        conditions.push(format!("created_by = {p}"));
    }
    if let Some(prefix) = &filter.id_prefix {
        conditions.push(id_prefix_range("operation_id", prefix, &mut params, bind));
    }
    if let Some(kinds) = &filter.kinds {
        let numbers: Vec<String> = kinds.iter().map(|k| k.number().to_string()).collect();
        conditions.push(one_of("kind", &numbers));
    }
    let limit = bind(
        Param::Int(i64::try_from(limit).unwrap_or(i64::MAX)),
        &mut params,
    );
    (
        format!(
            "SELECT {} FROM events WHERE {} ORDER BY position LIMIT {limit}",
            crate::record::EVENT_COLUMNS,
            conditions.join(" AND ")
        ),
        params,
    )
}

/// A statement and its parameters.
pub type Statement = (String, Vec<Param>);

/// Binds parameters in order, as `placeholder(n)` names the n-th.
struct Binder<F> {
    params: Vec<Param>,
    placeholder: F,
}

impl<F: Fn(usize) -> String> Binder<F> {
    fn new(placeholder: F) -> Self {
        Self {
            params: Vec::new(),
            placeholder,
        }
    }

    fn bind(&mut self, param: Param) -> String {
        self.params.push(param);
        (self.placeholder)(self.params.len())
    }

    fn int(&mut self, n: impl TryInto<i64>) -> String {
        let n = n.try_into().unwrap_or(i64::MAX);
        self.bind(Param::Int(n))
    }

    /// ` AND scope IN (…)` for a scope filter, else nothing. The column is
    /// wrapped (`scope || ''`) so that no planner picks the scope index,
    /// which holds every operation of the scope, over the running or
    /// done-by-age index, which bound the scan.
    fn scopes(&mut self, scopes: &Option<BTreeSet<String>>) -> String {
        match scopes {
            None => String::new(),
            Some(scopes) => {
                let placeholders: Vec<String> = scopes
                    .iter()
                    .map(|scope| self.bind(Param::Text(scope.clone())))
                    .collect();
                format!(" AND {}", one_of("scope || ''", &placeholders))
            }
        }
    }

    fn finish(self, statement: String) -> Statement {
        (statement, self.params)
    }
}

/// The id prefix (the producing service) of an operation row.
const PREFIX: &str = "substr(id, 1, 3)";

/// The first events of the most recently changed operations of each id
/// prefix: running ones (the running index) and those done since the cutoff
/// (the done-by-age index). Rows: operation id, kind, time, by id and sequence.
pub fn progress_samples(query: &ProgressQuery, placeholder: impl Fn(usize) -> String) -> Statement {
    let mut b = Binder::new(placeholder);
    let running_scopes = b.scopes(&query.scopes);
    let since = b.int(query.changed_since.unix_nanos());
    let done_scopes = b.scopes(&query.scopes);
    let per_prefix = b.int(query.operations_per_prefix);
    let per_operation = b.int(query.events_per_operation);
    b.finish(format!(
        "WITH recent AS (\
         SELECT id, modified_at FROM operations WHERE state != {STATE_DONE}{running_scopes} \
         UNION ALL \
         SELECT id, modified_at FROM operations WHERE state = {STATE_DONE} \
         AND modified_at >= {since}{done_scopes}), \
         ranked AS (SELECT id, row_number() OVER (PARTITION BY {PREFIX} \
         ORDER BY modified_at DESC, id DESC) AS rank FROM recent) \
         SELECT e.operation_id, e.kind, e.at FROM ranked JOIN events e ON e.operation_id = ranked.id \
         WHERE ranked.rank <= {per_prefix} AND e.sequence <= {per_operation} \
         ORDER BY e.operation_id, e.sequence"
    ))
}

/// The statements of an overview, each an indexed scan (running: the
/// running index; done: the done-by-age index).
pub struct OverviewStatements {
    /// Rows: prefix, running, cancel overdue.
    pub running: Statement,
    /// Rows: prefix, error code (NULL for a response), count.
    pub done: Statement,
    /// Operation rows.
    pub oldest: Statement,
    /// Operation rows.
    pub candidates: Statement,
    /// Rows: id, created_at, modified_at, cancel_requested_at, error_code.
    pub sample: Statement,
}

pub fn overview(
    query: &OverviewQuery,
    placeholder: impl Fn(usize) -> String + Copy,
) -> OverviewStatements {
    let running = {
        let mut b = Binder::new(placeholder);
        let overdue = b.int(query.cancel_requested_before.unix_nanos());
        let scopes = b.scopes(&query.scopes);
        b.finish(format!(
            "SELECT {PREFIX}, count(*), count(CASE WHEN cancel_requested_at <= {overdue} THEN 1 END) \
             FROM operations WHERE state != {STATE_DONE}{scopes} GROUP BY {PREFIX}"
        ))
    };
    let done = {
        let mut b = Binder::new(placeholder);
        let since = b.int(query.done_since.unix_nanos());
        let scopes = b.scopes(&query.scopes);
        b.finish(format!(
            "SELECT {PREFIX}, error_code, count(*) FROM operations \
             WHERE state = {STATE_DONE} AND modified_at >= {since}{scopes} \
             GROUP BY {PREFIX}, error_code"
        ))
    };
    let oldest = {
        let mut b = Binder::new(placeholder);
        let scopes = b.scopes(&query.scopes);
        let limit = b.int(query.oldest);
        // `created_at + 0`: sorting the running rows beats walking the
        // creation index through every operation ever kept.
        b.finish(format!(
            "SELECT {COLUMNS} FROM operations WHERE state != {STATE_DONE}{scopes} \
             ORDER BY created_at + 0, id LIMIT {limit}"
        ))
    };
    let candidates = {
        let mut b = Binder::new(placeholder);
        let quiet = b.int(query.quiet_before.unix_nanos());
        let lease = b.int(query.lease_before.unix_nanos());
        let scopes = b.scopes(&query.scopes);
        let limit = b.int(query.candidates);
        b.finish(format!(
            "SELECT {COLUMNS} FROM operations WHERE state != {STATE_DONE} \
             AND (modified_at <= {quiet} OR lease_expires_at <= {lease}){scopes} \
             ORDER BY modified_at, id LIMIT {limit}"
        ))
    };
    let sample = {
        let mut b = Binder::new(placeholder);
        let since = b.int(query.done_since.unix_nanos());
        let scopes = b.scopes(&query.scopes);
        let limit = b.int(query.sample);
        b.finish(format!(
            "SELECT id, created_at, modified_at, cancel_requested_at, error_code FROM operations \
             WHERE state = {STATE_DONE} AND modified_at >= {since}{scopes} \
             ORDER BY modified_at DESC, id DESC LIMIT {limit}"
        ))
    };
    OverviewStatements {
        running,
        done,
        oldest,
        candidates,
        sample,
    }
}

/// The rows of [`progress_samples`] (id, kind, time), one sample per id.
pub fn samples_from_rows(rows: Vec<(String, i64, i64)>) -> Result<Vec<ProgressSample>, StoreError> {
    let mut samples: Vec<ProgressSample> = Vec::new();
    for (id, kind, at) in rows {
        let kind = i32::try_from(kind)
            .ok()
            .and_then(EventKind::from_number)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown event kind {kind}")))?;
        let at = Timestamp::from_unix_nanos(at);
        match samples.last_mut() {
            Some(last) if last.id.as_str() == id => last.events.push((kind, at)),
            _ => samples.push(ProgressSample {
                id: OperationId::from_trusted(id),
                events: vec![(kind, at)],
            }),
        }
    }
    Ok(samples)
}

fn error_code(code: Option<i64>) -> Result<Option<i32>, StoreError> {
    code.map(|code| {
        i32::try_from(code)
            .map_err(|_| StoreError::Corrupt(format!("error code {code} out of range")))
    })
    .transpose()
}

fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// A row of the overview's sample: id, created_at, modified_at,
/// cancel_requested_at, error_code.
pub type SampleRow = (String, i64, i64, Option<i64>, Option<i64>);

/// The raw rows of the [`OverviewStatements`], read by a backend.
pub struct OverviewRaw {
    pub running: Vec<(String, i64, i64)>,
    pub done: Vec<(String, Option<i64>, i64)>,
    pub oldest: Vec<Operation>,
    pub candidates: Vec<Operation>,
    pub sample: Vec<SampleRow>,
}

impl OverviewRaw {
    pub fn into_rows(self) -> Result<OverviewRows, StoreError> {
        let mut rows = OverviewRows {
            running: self
                .running
                .into_iter()
                .map(|(prefix, running, overdue)| RunningCount {
                    prefix,
                    running: count(running),
                    cancel_overdue: count(overdue),
                })
                .collect(),
            done: self
                .done
                .into_iter()
                .map(|(prefix, code, n)| {
                    Ok(DoneCount {
                        prefix,
                        error_code: error_code(code)?,
                        count: count(n),
                    })
                })
                .collect::<Result<_, StoreError>>()?,
            oldest: self.oldest,
            candidates: self.candidates,
            sample: self
                .sample
                .into_iter()
                .map(|(id, created_at, modified_at, cancel, code)| {
                    Ok(DoneSample {
                        id: OperationId::from_trusted(id),
                        created_at: Timestamp::from_unix_nanos(created_at),
                        modified_at: Timestamp::from_unix_nanos(modified_at),
                        cancel_requested_at: cancel.map(Timestamp::from_unix_nanos),
                        error_code: error_code(code)?,
                    })
                })
                .collect::<Result<_, StoreError>>()?,
        };
        crate::sort_overview_counts(&mut rows);
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opsd_core::{Cursor, ListFilter, OperationId, Timestamp};

    #[test]
    fn only_present_filters_are_bound() {
        let query = ListQuery {
            filter: ListFilter::default(),
            after: None,
            limit: 10,
        };
        let (sql, params) = list(&query, DescriptionSearch::Omit, |n| format!("${n}"));
        assert!(
            sql.ends_with("ORDER BY created_at DESC, id DESC LIMIT $1"),
            "{sql}"
        );
        assert!(!sql.contains("WHERE"));
        assert_eq!(params, [Param::Int(10)]);

        let query = ListQuery {
            filter: ListFilter {
                resource_id: Some("disk-1".into()),
                state: StateFilter::Running,
                ..ListFilter::default()
            },
            after: Some(Cursor {
                created_at: Timestamp::from_unix_nanos(5),
                id: OperationId::parse("id", "ops00000000000000001").unwrap(),
            }),
            limit: 2,
        };
        let (sql, params) = list(&query, DescriptionSearch::Omit, |n| format!("?{n}"));
        assert!(
            sql.contains("WHERE resource_id = ?1 AND state != 2 AND (created_at, id) < (?2, ?3)"),
            "{sql}"
        );
        assert_eq!(params.len(), 4);
    }

    #[test]
    fn an_id_prefix_is_a_key_range_and_the_search_a_function() {
        let query = |id_prefix: &str| ListQuery {
            filter: ListFilter {
                id_prefix: Some(id_prefix.into()),
                description_contains: Some("50%_\\".into()),
                ..ListFilter::default()
            },
            after: None,
            limit: 5,
        };
        let (sql, params) = list(&query("fhz"), DescriptionSearch::Function("f"), |n| {
            format!("?{n}")
        });
        assert!(
            sql.contains("WHERE id >= ?1 AND id < ?2 AND f(description, ?3) ORDER BY"),
            "{sql}"
        );
        assert_eq!(
            params,
            [
                Param::Text("fhz".into()),
                Param::Text("fi".into()),
                Param::Text("50%_\\".into()),
                Param::Int(5)
            ]
        );
        let (sql, params) = list(&query("zz"), DescriptionSearch::Omit, |n| format!("${n}"));
        assert!(sql.contains("WHERE id >= $1 ORDER BY"), "{sql}");
        assert!(!sql.contains("(description"), "{sql}");
        assert_eq!(params, [Param::Text("zz".into()), Param::Int(5)]);
    }
}
