//! SQL shared by the SQL backends, written once with backend-specific placeholders.

use opsd_core::{ListQuery, StateFilter};

use crate::record::{COLUMNS, STATE_DONE};

/// A bound parameter of a generated statement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Param {
    Text(String),
    Int(i64),
}

/// `SELECT` for one page of a listing. Only the filters present appear in the
/// statement, so each combination is a plain indexed range scan: by
/// (created_at, id), or (resource_id, created_at, id), or (created_by, created_at, id).
pub fn list(query: &ListQuery, placeholder: impl Fn(usize) -> String) -> (String, Vec<Param>) {
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
        // No scope at all matches nothing; `IN ()` is not valid SQL.
        if placeholders.is_empty() {
            conditions.push("FALSE".to_owned());
        } else {
            conditions.push(format!("scope IN ({})", placeholders.join(", ")));
        }
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
        if placeholders.is_empty() {
            conditions.push("FALSE".to_owned());
        } else {
            conditions.push(format!("scope IN ({})", placeholders.join(", ")));
        }
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
        // Ids are [0-9a-z]: a range is a prefix match without LIKE's escapes.
        let from = bind(Param::Text(prefix.clone()), &mut params);
        let to = bind(Param::Text(format!("{prefix}~")), &mut params);
        conditions.push(format!("operation_id >= {from} AND operation_id < {to}"));
    }
    if let Some(kinds) = &filter.kinds {
        let numbers: Vec<String> = kinds.iter().map(|k| k.number().to_string()).collect();
        if numbers.is_empty() {
            conditions.push("FALSE".to_owned());
        } else {
            conditions.push(format!("kind IN ({})", numbers.join(", ")));
        }
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
        let (sql, params) = list(&query, |n| format!("${n}"));
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
        let (sql, params) = list(&query, |n| format!("?{n}"));
        assert!(
            sql.contains("WHERE resource_id = ?1 AND state != 2 AND (created_at, id) < (?2, ?3)"),
            "{sql}"
        );
        assert_eq!(params.len(), 4);
    }
}
