//! The conformance suite, once per backend.

use std::sync::Arc;

use opsd_store::{MemoryStore, OperationStore, SqliteOptions, SqliteStore};

mod memory {
    use super::*;

    opsd_store::conformance_suite!(async {
        Some((Arc::new(MemoryStore::new()) as Arc<dyn OperationStore>, ()))
    });
}

mod sqlite {
    use super::*;

    async fn open() -> Option<(Arc<dyn OperationStore>, tempfile::TempDir)> {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(SqliteOptions::new(dir.path().join("opsd.db"))).unwrap();
        Some((Arc::new(store), dir))
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
        let store = PostgresStore::open(PostgresOptions::new(database.url))
            .await
            .unwrap();
        Some((Arc::new(store), ()))
    }

    opsd_store::conformance_suite!(open());
}
