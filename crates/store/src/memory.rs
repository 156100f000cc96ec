//! An in-memory backend: fast, not durable; for tests and experiments.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use opsd_core::{Operation, OperationId};

use tokio::sync::broadcast;

use crate::{CHANGE_BUFFER, Change, Inserted, OperationStore, StoreError, Swapped};

#[derive(Default)]
struct Tables {
    operations: HashMap<OperationId, Operation>,
    /// (created_by, idempotency key) → the operation that key created.
    idempotency: HashMap<(String, String), OperationId>,
    closed: bool,
}

pub struct MemoryStore {
    tables: Mutex<Tables>,
    changes: broadcast::Sender<Change>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self {
            tables: Mutex::default(),
            changes: broadcast::channel(CHANGE_BUFFER).0,
        }
    }
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn committed(&self, op: &Operation) {
        // No subscribers is fine: nobody is waiting.
        let _ = self.changes.send(Change::Committed {
            id: op.id.clone(),
            version: op.version,
        });
    }

    fn tables(&self) -> Result<std::sync::MutexGuard<'_, Tables>, StoreError> {
        // A panic while holding the lock leaves plain data behind, still consistent
        // because every change below is a single insert.
        let tables = self.tables.lock().unwrap_or_else(|p| p.into_inner());
        if tables.closed {
            return Err(StoreError::Closed);
        }
        Ok(tables)
    }
}

#[async_trait]
impl OperationStore for MemoryStore {
    async fn insert(&self, operation: &Operation) -> Result<Inserted, StoreError> {
        let mut tables = self.tables()?;
        let key = operation
            .idempotency
            .as_ref()
            .map(|i| (operation.created_by.clone(), i.key.clone()));
        if let Some(existing) = key.as_ref().and_then(|k| tables.idempotency.get(k)) {
            let existing = tables.operations[existing].clone();
            return Ok(Inserted::IdempotencyKeyUsed(existing));
        }
        if tables.operations.contains_key(&operation.id) {
            return Ok(Inserted::IdTaken);
        }
        tables
            .operations
            .insert(operation.id.clone(), operation.clone());
        if let Some(key) = key {
            tables.idempotency.insert(key, operation.id.clone());
        }
        self.committed(operation);
        Ok(Inserted::Created)
    }

    async fn get(&self, id: &OperationId) -> Result<Option<Operation>, StoreError> {
        Ok(self.tables()?.operations.get(id).cloned())
    }

    async fn compare_and_swap(&self, next: &Operation) -> Result<Swapped, StoreError> {
        let mut tables = self.tables()?;
        let Some(current) = tables.operations.get_mut(&next.id) else {
            return Ok(Swapped::Missing);
        };
        if current.version + 1 != next.version {
            return Ok(Swapped::Stale(current.clone()));
        }
        *current = next.clone();
        self.committed(next);
        Ok(Swapped::Swapped)
    }

    fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.changes.subscribe()
    }

    async fn close(&self) -> Result<(), StoreError> {
        let mut tables = self.tables.lock().unwrap_or_else(|p| p.into_inner());
        tables.closed = true;
        Ok(())
    }
}
