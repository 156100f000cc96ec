//! SQL shared by the SQL backends, written once with backend-specific placeholders.

use opsd_core::{ListQuery, StateFilter};

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
