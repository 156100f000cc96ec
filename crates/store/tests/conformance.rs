//! The conformance suite, once per backend.

use std::sync::Arc;

use opsd_store::{MemoryStore, OperationStore, SqliteOptions, SqliteStore};

mod memory {
    use super::*;

    opsd_store::conformance_suite!(async {
        let store = MemoryStore::new()
            .with_max_events_per_operation(opsd_store::conformance::MAX_EVENTS_PER_OPERATION);
        Some((Arc::new(store) as Arc<dyn OperationStore>, ()))
    });
}

mod sqlite {
    use super::*;

    pub fn options(dir: &tempfile::TempDir) -> SqliteOptions {
        SqliteOptions {
            max_events_per_operation: opsd_store::conformance::MAX_EVENTS_PER_OPERATION,
            ..SqliteOptions::new(dir.path().join("opsd.db"))
        }
    }

    async fn open() -> Option<(Arc<dyn OperationStore>, tempfile::TempDir)> {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(options(&dir)).unwrap();
        Some((Arc::new(store), dir))
    }

    opsd_store::conformance_suite!(open());
}

/// The cache of done operations in front of a durable store behaves as the
/// store does.
mod cached_sqlite {
    use super::*;
    use opsd_store::CachingStore;

    async fn open() -> Option<(Arc<dyn OperationStore>, tempfile::TempDir)> {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(super::sqlite::options(&dir)).unwrap();
        Some((Arc::new(CachingStore::new(Arc::new(store), 1 << 20)), dir))
    }

    opsd_store::conformance_suite!(open());
}

mod postgres {
    use super::*;
    use opsd_store::{PostgresOptions, PostgresStore};

    /// `None` (announced on stderr) when no PostgreSQL is available and CI did
    /// not require it; each case gets a database of its own.
    async fn open() -> Option<(Arc<dyn OperationStore>, ())> {
        let database = opsd_testkit::postgres().await?;
        let store = PostgresStore::open(PostgresOptions {
            max_events_per_operation: opsd_store::conformance::MAX_EVENTS_PER_OPERATION,
            ..PostgresOptions::new(database.url)
        })
        .await
        .unwrap();
        Some((Arc::new(store), ()))
    }

    opsd_store::conformance_suite!(open());
}

/// What only a shared database has: several replicas, and a notification
/// connection that can drop.
mod postgres_replicas {
    use std::time::Duration;

    use opsd_store::conformance::sample;
    use opsd_store::{Change, PostgresOptions, PostgresStore};
    use tokio::sync::broadcast;

    use super::*;

    async fn next_change(changes: &mut broadcast::Receiver<Change>) -> Change {
        tokio::time::timeout(Duration::from_secs(10), changes.recv())
            .await
            .expect("a change arrives within 10 s")
            .expect("the change stream stays open")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_replica_hears_what_another_commits_and_reads_it_at_once() {
        let Some(database) = opsd_testkit::postgres().await else {
            return;
        };
        let a = PostgresStore::open(PostgresOptions::new(&database.url))
            .await
            .unwrap();
        let b = PostgresStore::open(PostgresOptions::new(&database.url))
            .await
            .unwrap();
        let mut heard_by_a = a.subscribe();

        let op = sample(1);
        b.insert(&op, &opsd_store::conformance::created(&op))
            .await
            .unwrap();
        // Read-your-writes across replicas: visible through A once B acknowledged.
        assert_eq!(a.get(&op.id).await.unwrap(), Some(op.clone()));
        loop {
            match next_change(&mut heard_by_a).await {
                Change::Committed { id, version } if id == op.id => {
                    assert_eq!(version, 1);
                    break;
                }
                _ => {}
            }
        }
        a.close().await.unwrap();
        b.close().await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_cached_operation_deleted_by_another_replica_is_gone() {
        let Some(database) = opsd_testkit::postgres().await else {
            return;
        };
        let inner: Arc<dyn OperationStore> = Arc::new(
            PostgresStore::open(PostgresOptions::new(&database.url))
                .await
                .unwrap(),
        );
        let cached = opsd_store::CachingStore::new(Arc::clone(&inner), 1 << 20);
        let other = PostgresStore::open(PostgresOptions::new(&database.url))
            .await
            .unwrap();
        let mut heard = cached.subscribe();

        let mut op = sample(1);
        op.modified_at = opsd_core::Timestamp::from_unix_nanos(1_000);
        other
            .insert(&op, &opsd_store::conformance::created(&op))
            .await
            .unwrap();
        let mut finished = op.clone();
        finished.version = 2;
        finished.state = opsd_core::State::Done {
            outcome: opsd_core::Outcome::Error(opsd_core::RpcStatus {
                code: 13,
                message: "broken".into(),
                details: vec![],
            }),
            cancel_requested_at: None,
        };
        other
            .compare_and_swap(
                &finished,
                Some(&opsd_store::conformance::changed(&finished)),
            )
            .await
            .unwrap();
        assert_eq!(cached.get(&op.id).await.unwrap(), Some(finished.clone()));
        assert_eq!(cached.cached(), 1, "a done operation read once is cached");

        let cutoff = opsd_core::Timestamp::from_unix_nanos(2_000);
        assert_eq!(other.delete_done_before(cutoff, 10).await.unwrap(), 1);
        loop {
            if next_change(&mut heard).await == (Change::Purged { before: cutoff }) {
                break;
            }
        }
        // The cache heard it too (on its own subscription): bounded wait for it.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while cached.get(&op.id).await.unwrap().is_some() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the deleted operation is still served after 10 s"
            );
            tokio::task::yield_now().await;
        }
        cached.close().await.unwrap();
        other.close().await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_failing_write_does_not_fail_the_writes_committed_with_it() {
        let Some(database) = opsd_testkit::postgres().await else {
            return;
        };
        let store = Arc::new(
            PostgresStore::open(PostgresOptions::new(&database.url))
                .await
                .unwrap(),
        );
        // PostgreSQL refuses NUL in text (opsd's validation refuses it earlier;
        // here it stands for any statement the database rejects).
        let mut bad = sample(1_000);
        bad.description = "nul \0 byte".into();
        let mut writes = Vec::new();
        for n in 0..64 {
            let store = Arc::clone(&store);
            let op = if n == 32 { bad.clone() } else { sample(n) };
            writes.push(tokio::spawn(async move {
                (
                    op.clone(),
                    store
                        .insert(&op, &opsd_store::conformance::created(&op))
                        .await,
                )
            }));
        }
        for write in writes {
            let (op, result) = write.await.unwrap();
            if op.id == bad.id {
                assert!(
                    matches!(result, Err(opsd_store::StoreError::Unavailable(_))),
                    "{result:?}"
                );
                assert_eq!(store.get(&op.id).await.unwrap(), None);
            } else {
                assert_eq!(result, Ok(opsd_store::Inserted::Created));
                assert_eq!(store.get(&op.id).await.unwrap(), Some(op));
            }
        }
        store.close().await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn replicas_starting_together_migrate_once() {
        let Some(database) = opsd_testkit::postgres().await else {
            return;
        };
        let opens: Vec<_> = (0..6)
            .map(|_| {
                let url = database.url.clone();
                tokio::spawn(async move { PostgresStore::open(PostgresOptions::new(url)).await })
            })
            .collect();
        let mut stores = Vec::new();
        for open in opens {
            stores.push(open.await.unwrap().expect("every replica starts"));
        }
        let (admin, connection) = tokio_postgres::connect(&database.url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        let versions: i64 = admin
            .query_one("SELECT count(*) FROM opsd_schema_migrations", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(versions, 4, "each migration applied exactly once");
        for store in stores {
            store.close().await.unwrap();
        }
    }

    /// When the event of a change cannot be written, the change is rolled
    /// back with it: on PostgreSQL, both are in one transaction.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_change_whose_event_fails_is_not_written() {
        use opsd_core::{EventKind, NewEvent};
        let Some(database) = opsd_testkit::postgres().await else {
            return;
        };
        let store = PostgresStore::open(PostgresOptions::new(&database.url))
            .await
            .unwrap();
        let (admin, connection) = tokio_postgres::connect(&database.url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        admin
            .batch_execute(
                "CREATE FUNCTION refuse_events() RETURNS trigger LANGUAGE plpgsql AS $$ \
                 BEGIN IF NEW.actor = 'refused' THEN RAISE EXCEPTION 'injected event failure'; \
                 END IF; RETURN NEW; END $$; \
                 CREATE TRIGGER refuse_events BEFORE INSERT ON events \
                 FOR EACH ROW EXECUTE FUNCTION refuse_events();",
            )
            .await
            .unwrap();
        let op = sample(1);
        assert!(
            store
                .insert(&op, &NewEvent::of(EventKind::Created, &op, "refused"))
                .await
                .is_err()
        );
        assert_eq!(
            store.get(&op.id).await.unwrap(),
            None,
            "no operation without its event"
        );
        store
            .insert(&op, &opsd_store::conformance::created(&op))
            .await
            .unwrap();
        let mut next = op.clone();
        next.version = 2;
        next.description = "changed".into();
        let neighbour = sample(2);
        let neighbour_created = opsd_store::conformance::created(&neighbour);
        let refused_change = NewEvent::of(EventKind::MetadataUpdated, &next, "refused");
        let (refused, accepted) = tokio::join!(
            store.compare_and_swap(&next, Some(&refused_change)),
            store.insert(&neighbour, &neighbour_created),
        );
        assert!(refused.is_err());
        assert_eq!(accepted.unwrap(), opsd_store::Inserted::Created);
        assert_eq!(
            store.get(&op.id).await.unwrap(),
            Some(op.clone()),
            "unchanged"
        );
        assert_eq!(store.list_events(&op.id, 0, 10).await.unwrap().len(), 1);
        assert_eq!(
            store.list_events(&neighbour.id, 0, 10).await.unwrap().len(),
            1
        );
        store.close().await.unwrap();
    }

    /// A database at schema version 1 (before reported failures) is upgraded
    /// in place by the next start, keeping its operations.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_version_1_database_is_migrated_in_place() {
        let Some(database) = opsd_testkit::postgres().await else {
            return;
        };
        PostgresStore::open(PostgresOptions::new(&database.url))
            .await
            .unwrap()
            .close()
            .await
            .unwrap();
        let (admin, connection) = tokio_postgres::connect(&database.url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        // Back to what version 1 left, with an operation written then.
        admin
            .batch_execute(
                "DROP TABLE events, feed_horizon; DROP SEQUENCE event_positions; \
                 ALTER TABLE operations DROP COLUMN reported_failure, \
                   DROP COLUMN failure_reported_at, DROP COLUMN trace_parent, \
                   DROP COLUMN trace_state; \
                 DELETE FROM opsd_schema_migrations WHERE version >= 2; \
                 INSERT INTO operations (id, version, description, created_at, created_by, \
                   modified_at, cancellation, state, exclusive, scope) \
                   VALUES ('tst00000000000000001', 1, 'old', 5, 'alice', 5, 0, 0, 0, 'folder-1')",
            )
            .await
            .unwrap();

        let store = PostgresStore::open(PostgresOptions::new(&database.url))
            .await
            .unwrap();
        let id = opsd_core::OperationId::parse("id", "tst00000000000000001").unwrap();
        let old = store
            .get(&id)
            .await
            .unwrap()
            .expect("kept by the migration");
        assert_eq!(old.description, "old");
        assert_eq!(old.reported_failure, None);
        let mut failing = old.clone();
        failing.version += 1;
        failing.reported_failure = Some(opsd_core::ReportedFailure {
            status: opsd_core::RpcStatus {
                code: 8,
                message: "quota".into(),
                details: vec![],
            },
            reported_at: opsd_core::Timestamp::from_unix_nanos(6),
        });
        assert_eq!(
            store
                .compare_and_swap(&failing, Some(&opsd_store::conformance::changed(&failing)))
                .await
                .unwrap(),
            opsd_store::Swapped::Swapped
        );
        assert_eq!(store.get(&id).await.unwrap(), Some(failing));
        let versions: i64 = admin
            .query_one("SELECT max(version) FROM opsd_schema_migrations", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(versions, 4);
        store.close().await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_dropped_listener_reconnects_and_asks_for_a_resync() {
        let Some(database) = opsd_testkit::postgres().await else {
            return;
        };
        let store = PostgresStore::open(PostgresOptions::new(&database.url))
            .await
            .unwrap();
        let mut changes = store.subscribe();

        let (admin, connection) = tokio_postgres::connect(&database.url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        let killed = admin
            .query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE datname = current_database() AND query LIKE 'LISTEN%'",
                &[],
            )
            .await
            .unwrap();
        assert_eq!(killed.len(), 1, "one listening connection per store");

        // Whatever happened while it was gone is unknown: the store says so...
        loop {
            if next_change(&mut changes).await == Change::Resync {
                break;
            }
        }
        // ...and hears changes again afterwards.
        let op = sample(2);
        store
            .insert(&op, &opsd_store::conformance::created(&op))
            .await
            .unwrap();
        loop {
            if let Change::Committed { id, .. } = next_change(&mut changes).await
                && id == op.id
            {
                break;
            }
        }
        store.close().await.unwrap();
    }
}
