//! Schema changes are forward-only and expand-then-contract: a database at
//! the previous schema version, filled by that release's own statements
//! (kept in `fixtures/postgres/schema-vN.sql`), is migrated; every stored
//! operation reads back unchanged, and the previous release's statements
//! still succeed against the new schema, beside this release's store.

use std::collections::HashMap;

use opsd_core::{OperationId, State};
use opsd_store::{OperationStore, PostgresOptions, PostgresStore};
use tokio_postgres::types::ToSql;

type Params = Vec<Box<dyn ToSql + Sync + Send>>;

/// The statements of the release at `version`, by name.
fn release_statements(version: u64) -> Option<HashMap<String, String>> {
    let path = format!(
        "{}/tests/fixtures/postgres/schema-v{version}.sql",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(path).ok()?;
    let mut statements = HashMap::new();
    for section in text.split("-- name: ").skip(1) {
        let (name, body) = section.split_once('\n').expect("a name line");
        let body: Vec<&str> = body
            .lines()
            .filter(|line| !line.starts_with("--"))
            .collect();
        statements.insert(name.trim().to_owned(), body.join("\n").trim().to_owned());
    }
    Some(statements)
}

/// An operation row as a release writes it (the 27 columns of schema v2 and v3;
/// v4 adds the trace context, which these rows leave empty).
#[derive(Clone)]
struct Row {
    id: String,
    version: i64,
    description: String,
    created_at: i64,
    modified_at: i64,
    resource_id: Option<String>,
    cancellation: i64,
    metadata: Option<(String, Vec<u8>)>,
    state: i64,
    cancel_requested_at: Option<i64>,
    response: Option<(String, Vec<u8>)>,
    error: Option<(i64, String)>,
    idempotency: Option<(String, Vec<u8>)>,
    deadline: Option<i64>,
    lease_expires_at: Option<i64>,
    exclusive: i64,
    expires_at: Option<i64>,
}

const NOW: i64 = 1_790_000_000_000_000_000;

fn running(id: &str) -> Row {
    Row {
        id: id.to_owned(),
        version: 1,
        description: format!("written by the old release: {id}"),
        created_at: NOW,
        modified_at: NOW,
        resource_id: None,
        cancellation: 0,
        metadata: None,
        state: 0,
        cancel_requested_at: None,
        response: None,
        error: None,
        idempotency: None,
        deadline: None,
        lease_expires_at: None,
        exclusive: 0,
        expires_at: None,
    }
}

/// Every shape of operation a release at schema v2 stores.
fn fixture_rows() -> Vec<Row> {
    let done = |mut row: Row| {
        row.version = 2;
        row.state = 2;
        row.modified_at = NOW + 1_000;
        row
    };
    vec![
        running("tst00000000000000001"),
        done(Row {
            response: Some((
                "type.googleapis.com/google.protobuf.StringValue".into(),
                vec![10, 2, b'o', b'k'],
            )),
            expires_at: Some(NOW + 86_400_000_000_000),
            ..running("tst00000000000000002")
        }),
        done(Row {
            error: Some((9, "the disk is attached".into())),
            ..running("tst00000000000000003")
        }),
        Row {
            cancellation: 1,
            state: 1,
            version: 2,
            cancel_requested_at: Some(NOW + 5),
            ..running("tst00000000000000004")
        },
        Row {
            resource_id: Some("disk-1".into()),
            exclusive: 1,
            metadata: Some((
                "type.googleapis.com/google.protobuf.StringValue".into(),
                vec![10, 1, b'm'],
            )),
            idempotency: Some(("key-1".into(), vec![7; 32])),
            deadline: Some(NOW + 60_000_000_000),
            lease_expires_at: Some(NOW + 30_000_000_000),
            cancellation: 2,
            ..running("tst00000000000000005")
        },
    ]
}

/// The insert's parameters for `r`; releases from schema v4 on also bind
/// the trace context, left empty here.
fn insert_params(statements: &HashMap<String, String>, r: &Row) -> Params {
    let mut params = row_params(r);
    if statements["insert"].contains("$29") {
        params.push(Box::new(None::<String>));
        params.push(Box::new(None::<String>));
    }
    params
}

fn row_params(r: &Row) -> Params {
    vec![
        Box::new(r.id.clone()),
        Box::new(r.version),
        Box::new(r.description.clone()),
        Box::new(r.created_at),
        Box::new("alice".to_owned()),
        Box::new(r.modified_at),
        Box::new(r.resource_id.clone()),
        Box::new(r.cancellation),
        Box::new(r.metadata.as_ref().map(|m| m.0.clone())),
        Box::new(r.metadata.as_ref().map(|m| m.1.clone())),
        Box::new(r.state),
        Box::new(r.cancel_requested_at),
        Box::new(r.response.as_ref().map(|m| m.0.clone())),
        Box::new(r.response.as_ref().map(|m| m.1.clone())),
        Box::new(r.error.as_ref().map(|e| e.0)),
        Box::new(r.error.as_ref().map(|e| e.1.clone())),
        Box::new(None::<Vec<u8>>),
        Box::new(r.idempotency.as_ref().map(|i| i.0.clone())),
        Box::new(r.idempotency.as_ref().map(|i| i.1.clone())),
        Box::new(None::<Vec<u8>>),
        Box::new(r.deadline),
        Box::new(r.lease_expires_at),
        Box::new(r.exclusive),
        Box::new(r.expires_at),
        Box::new("default".to_owned()),
        Box::new(None::<Vec<u8>>),
        Box::new(None::<i64>),
    ]
}

fn swap_params(r: &Row) -> Params {
    vec![
        Box::new(r.id.clone()),
        Box::new(r.version),
        Box::new(r.modified_at),
        Box::new(r.metadata.as_ref().map(|m| m.0.clone())),
        Box::new(r.metadata.as_ref().map(|m| m.1.clone())),
        Box::new(r.state),
        Box::new(r.cancel_requested_at),
        Box::new(r.response.as_ref().map(|m| m.0.clone())),
        Box::new(r.response.as_ref().map(|m| m.1.clone())),
        Box::new(r.error.as_ref().map(|e| e.0)),
        Box::new(r.error.as_ref().map(|e| e.1.clone())),
        Box::new(None::<Vec<u8>>),
        Box::new(None::<Vec<u8>>),
        Box::new(r.lease_expires_at),
        Box::new(r.expires_at),
        Box::new(None::<Vec<u8>>),
        Box::new(None::<i64>),
    ]
}

fn refs(params: &Params) -> Vec<&(dyn ToSql + Sync)> {
    params
        .iter()
        .map(|p| p.as_ref() as &(dyn ToSql + Sync))
        .collect()
}

async fn run(
    client: &tokio_postgres::Client,
    statements: &HashMap<String, String>,
    name: &str,
    params: Params,
) -> Vec<tokio_postgres::Row> {
    let statement = statements
        .get(name)
        .unwrap_or_else(|| panic!("the fixture has no {name} statement"));
    client
        .query(statement.as_str(), &refs(&params))
        .await
        .unwrap_or_else(|e| panic!("the old release's {name} statement fails: {e}"))
}

/// The old release's columns of every operation, as JSON text, in id order.
async fn snapshot(client: &tokio_postgres::Client, columns: &str) -> Vec<String> {
    client
        .query(
            &format!(
                "SELECT row_to_json(t)::text FROM (SELECT {columns} FROM operations ORDER BY id) t"
            ),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect()
}

/// Everything the release's statements do, against whatever schema the
/// database has now: write, change, read, list, expire, count, the timeline
/// and the feed (where that release had them), and retention.
async fn the_release_still_runs(
    client: &tokio_postgres::Client,
    statements: &HashMap<String, String>,
    id: &str,
) {
    let mut row = running(id);
    // Old enough for retention to take it at the end.
    row.created_at = 5;
    row.modified_at = 5;
    assert_eq!(
        run(
            client,
            statements,
            "insert",
            insert_params(statements, &row)
        )
        .await
        .len(),
        1
    );
    row.version = 2;
    row.state = 2;
    row.modified_at = 10;
    row.response = Some(("type.googleapis.com/google.protobuf.Empty".into(), vec![]));
    assert_eq!(
        run(client, statements, "swap", swap_params(&row))
            .await
            .len(),
        1
    );
    assert_eq!(
        run(client, statements, "get", vec![Box::new(id.to_owned())])
            .await
            .len(),
        1
    );
    run(
        client,
        statements,
        "by_idempotency_key",
        vec![Box::new("alice".to_owned()), Box::new("key-1".to_owned())],
    )
    .await;
    run(
        client,
        statements,
        "running_exclusive",
        vec![Box::new("disk-1".to_owned())],
    )
    .await;
    let listed = run(
        client,
        statements,
        "list",
        vec![Box::new("default".to_owned()), Box::new(1000i64)],
    )
    .await;
    assert!(listed.len() > 1);
    run(
        client,
        statements,
        "due_for_expiry",
        vec![Box::new(NOW), Box::new(10i64)],
    )
    .await;
    run(client, statements, "count_running", vec![]).await;
    if statements.contains_key("insert_event") {
        client.batch_execute("BEGIN").await.unwrap();
        run(
            client,
            statements,
            "last_events",
            vec![Box::new(vec![id.to_owned()])],
        )
        .await;
        run(client, statements, "feed_lock", vec![Box::new(1i64)]).await;
        run(
            client,
            statements,
            "insert_event",
            vec![
                Box::new(id.to_owned()),
                Box::new(1i64),
                Box::new(1i64),
                Box::new(5i64),
                Box::new("alice".to_owned()),
                Box::new(1i64),
                Box::new(Vec::<u8>::new()),
                Box::new(0i64),
                Box::new("default".to_owned()),
                Box::new(None::<String>),
                Box::new("alice".to_owned()),
            ],
        )
        .await;
        client.batch_execute("COMMIT").await.unwrap();
        let events = run(
            client,
            statements,
            "list_events",
            vec![Box::new(id.to_owned()), Box::new(0i64), Box::new(10i64)],
        )
        .await;
        assert_eq!(events.len(), 1);
        let position: i64 = events[0].get(0);
        run(
            client,
            statements,
            "fold_event",
            vec![
                Box::new(position),
                Box::new(6i64),
                Box::new("alice".to_owned()),
                Box::new(2i64),
                Box::new(Vec::<u8>::new()),
                Box::new(1i64),
            ],
        )
        .await;
        run(
            client,
            statements,
            "read_feed",
            vec![Box::new(0i64), Box::new(10i64)],
        )
        .await;
        run(client, statements, "feed_bounds", vec![]).await;
    }
    let deleted = run(
        client,
        statements,
        "delete_done_before",
        vec![Box::new(11i64), Box::new(10i64)],
    )
    .await;
    let count: i64 = deleted[0].get(0);
    assert_eq!(count, 1, "retention took the old release's done operation");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_previous_schema_migrates_and_its_release_still_runs() {
    let Some(probe) = opsd_testkit::postgres().await else {
        return;
    };
    let current = PostgresStore::schema_version(&PostgresOptions::new(&probe.url))
        .await
        .unwrap()
        .binary;
    assert!(
        release_statements(current).is_some(),
        "tests/fixtures/postgres/schema-v{current}.sql must hold this release's statements"
    );
    // Only releases with fixtures: versions before them were never run side by side.
    let previous: Vec<u64> = (1..current)
        .filter(|v| release_statements(*v).is_some())
        .collect();
    assert!(
        !previous.is_empty(),
        "the previous release's statements are kept"
    );

    for old in previous {
        let statements = release_statements(old).unwrap();
        let Some(database) = opsd_testkit::postgres().await else {
            return;
        };
        let options = PostgresOptions::new(&database.url);
        assert_eq!(
            PostgresStore::migrate_database(&options, Some(old))
                .await
                .unwrap(),
            (0, old)
        );
        let (client, connection) = tokio_postgres::connect(&database.url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        let rows = fixture_rows();
        for row in &rows {
            let mut first = row.clone();
            if row.version == 2 {
                // Written as running, then changed, as the release does.
                first.version = 1;
                first.state = 0;
                first.modified_at = row.created_at;
                first.response = None;
                first.error = None;
                first.cancel_requested_at = None;
                first.cancellation = row.cancellation;
                run(
                    &client,
                    &statements,
                    "insert",
                    insert_params(&statements, &first),
                )
                .await;
                run(&client, &statements, "swap", swap_params(row)).await;
            } else {
                run(
                    &client,
                    &statements,
                    "insert",
                    insert_params(&statements, row),
                )
                .await;
            }
        }
        let columns = statements["columns"].clone();
        let before = snapshot(&client, &columns).await;
        assert_eq!(before.len(), rows.len());

        assert_eq!(
            PostgresStore::migrate_database(&options, None)
                .await
                .unwrap(),
            (old, current)
        );
        assert_eq!(
            snapshot(&client, &columns).await,
            before,
            "migrating from v{old} changed stored operations"
        );

        // This release reads every operation the old one wrote.
        let store = PostgresStore::open(options.clone()).await.unwrap();
        for row in &rows {
            let id = OperationId::parse("id", &row.id).unwrap();
            let op = store
                .get(&id)
                .await
                .unwrap()
                .unwrap_or_else(|| panic!("{} is gone after migrating from v{old}", row.id));
            assert_eq!(op.description, row.description);
            assert_eq!(op.version, row.version as u64);
            assert_eq!(op.created_by, "alice");
            let state = match op.state {
                State::Running => 0,
                State::CancelRequested { .. } => 1,
                State::Done { .. } => 2,
            };
            assert_eq!(state, row.state, "{}", row.id);
            assert_eq!(op.exclusive, row.exclusive == 1);
            assert_eq!(op.deadline.map(|d| d.unix_nanos()), row.deadline);
        }

        // …and the old release still runs beside it, on the new schema.
        the_release_still_runs(&client, &statements, "tst00000000000000009").await;
        let id = OperationId::parse("id", "tst00000000000000005").unwrap();
        assert!(store.get(&id).await.unwrap().is_some());
        store.close().await.unwrap();
    }

    // The current release's fixture matches the current schema: it is what
    // the next schema change will be held to.
    let statements = release_statements(current).unwrap();
    let Some(database) = opsd_testkit::postgres().await else {
        return;
    };
    PostgresStore::migrate_database(&PostgresOptions::new(&database.url), None)
        .await
        .unwrap();
    let (client, connection) = tokio_postgres::connect(&database.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    for row in fixture_rows() {
        run(
            &client,
            &statements,
            "insert",
            insert_params(&statements, &row),
        )
        .await;
    }
    the_release_still_runs(&client, &statements, "tst00000000000000009").await;
}
