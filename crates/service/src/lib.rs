//! The opsd service: the one place where requests meet the domain rules and
//! the store. Adapters (gRPC, REST, CLI) translate into these calls and back;
//! nothing here knows about a transport.

use std::sync::Arc;

use opsd_core::validate::Violations;
use opsd_core::{
    Any, Clock, Error, IdPrefix, NewOperation, Operation, OperationId, Outcome, Principal,
    Transition,
};
use opsd_store::{Inserted, OperationStore, Swapped};

/// How often a write retries after losing a compare-and-set race before
/// answering UNAVAILABLE; each loss means another writer made progress.
const MAX_WRITE_ATTEMPTS: usize = 64;
/// Random ids collide with negligible probability; a few retries make it nil.
const MAX_ID_ATTEMPTS: usize = 8;

#[derive(Clone, Debug, Default)]
pub struct ServiceConfig {
    /// Prefix of new ids when the producer names none.
    pub default_id_prefix: IdPrefix,
}

pub struct OperationService {
    store: Arc<dyn OperationStore>,
    clock: Arc<dyn Clock>,
    config: ServiceConfig,
}

impl OperationService {
    pub fn new(
        store: Arc<dyn OperationStore>,
        clock: Arc<dyn Clock>,
        config: ServiceConfig,
    ) -> Self {
        Self {
            store,
            clock,
            config,
        }
    }

    pub fn store(&self) -> &Arc<dyn OperationStore> {
        &self.store
    }

    pub async fn get(&self, _caller: &Principal, id: &OperationId) -> Result<Operation, Error> {
        self.load(id).await
    }

    /// Creates a running operation owned by `caller`, or returns the one an
    /// earlier request with the same idempotency key created.
    pub async fn create(
        &self,
        caller: &Principal,
        request: NewOperation,
    ) -> Result<Operation, Error> {
        request.validate()?;
        let prefix = request
            .id_prefix
            .clone()
            .unwrap_or_else(|| self.config.default_id_prefix.clone());
        for _ in 0..MAX_ID_ATTEMPTS {
            let id = OperationId::generate(&prefix, &mut rand::rng());
            let operation = Operation::create(id, request.clone(), &caller.id, self.clock.now());
            match self.store.insert(&operation).await? {
                Inserted::Created => {
                    tracing::debug!(operation_id = %operation.id, created_by = %caller.id, "operation created");
                    return Ok(operation);
                }
                Inserted::IdempotencyKeyUsed(existing) => {
                    existing.answer_retry(&request)?;
                    tracing::debug!(operation_id = %existing.id, "create answered by idempotency key");
                    return Ok(existing);
                }
                Inserted::IdTaken => {
                    tracing::warn!(operation_id = %operation.id, "generated operation id was taken, retrying");
                }
            }
        }
        Err(Error::Internal(
            "could not generate a free operation id".into(),
        ))
    }

    pub async fn cancel(&self, caller: &Principal, id: &OperationId) -> Result<Operation, Error> {
        let op = self.transition(id, |op, now| op.cancel(now)).await?;
        tracing::debug!(operation_id = %id, caller = %caller.id, done = op.is_done(), "cancel requested");
        Ok(op)
    }

    pub async fn update_metadata(
        &self,
        _caller: &Principal,
        id: &OperationId,
        metadata: Any,
    ) -> Result<Operation, Error> {
        let mut violations = Violations::default();
        violations.any("metadata", &metadata);
        violations.into_result()?;
        self.transition(id, |op, now| op.update_metadata(metadata.clone(), now))
            .await
    }

    pub async fn complete(
        &self,
        _caller: &Principal,
        id: &OperationId,
        outcome: Outcome,
    ) -> Result<Operation, Error> {
        let mut violations = Violations::default();
        match &outcome {
            Outcome::Response(any) => violations.any("response", any),
            Outcome::Error(status) => violations.error_status("error", status),
        }
        violations.into_result()?;
        let op = self
            .transition(id, |op, now| op.complete(outcome.clone(), now))
            .await?;
        tracing::debug!(operation_id = %id, "operation completed");
        Ok(op)
    }

    async fn load(&self, id: &OperationId) -> Result<Operation, Error> {
        self.store
            .get(id)
            .await?
            .ok_or_else(|| Error::NotFound { id: id.to_string() })
    }

    /// Applies a domain transition with compare-and-set, retrying on the
    /// version that won when another writer got there first.
    async fn transition(
        &self,
        id: &OperationId,
        change: impl Fn(&Operation, opsd_core::Timestamp) -> Result<Transition, Error>,
    ) -> Result<Operation, Error> {
        let mut current = self.load(id).await?;
        for _ in 0..MAX_WRITE_ATTEMPTS {
            let next = match change(&current, self.clock.now())? {
                Transition::Unchanged => return Ok(current),
                Transition::Changed(next) => next,
            };
            match self.store.compare_and_swap(&next).await? {
                Swapped::Swapped => return Ok(next),
                Swapped::Stale(latest) => current = latest,
                Swapped::Missing => return Err(Error::NotFound { id: id.to_string() }),
            }
        }
        Err(Error::Unavailable(format!(
            "operation {id} is changing too fast, retry later"
        )))
    }
}

#[cfg(test)]
mod tests;
