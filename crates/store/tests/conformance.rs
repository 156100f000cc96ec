//! The conformance suite, once per backend.

use std::sync::Arc;

use opsd_store::{MemoryStore, OperationStore, SqliteOptions, SqliteStore};

mod memory {
    use super::*;

    opsd_store::conformance_suite!(async {
        (Arc::new(MemoryStore::new()) as Arc<dyn OperationStore>, ())
    });
}

mod sqlite {
    use super::*;

    async fn open() -> (Arc<dyn OperationStore>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(SqliteOptions::new(dir.path().join("opsd.db"))).unwrap();
        (Arc::new(store), dir)
    }

    opsd_store::conformance_suite!(open());
}
