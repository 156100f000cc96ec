//! The producer side in a few lines: create an operation, and hold a handle
//! that renews its lease in the background, reports progress, tells the work
//! when cancellation is requested, and completes it. A handle dropped without
//! completing fails its operation, so nothing stays running forever.
//!
//! ```no_run
//! # async fn example(client: opsd_client::Client) -> Result<(), opsd_client::ClientError> {
//! use opsd_client::{NewOperation, ProducerOptions};
//!
//! let op = client.start_operation(NewOperation::new("snapshot disk-1"), ProducerOptions::default()).await?;
//! for step in 1..=10 {
//!     if op.is_cancel_requested() {
//!         return op.fail(1, "cancelled on request").await.map(drop);
//!     }
//!     op.progress(opsd_client::Progress { work_done: step, work_total: 10, ..Default::default() }).await?;
//! }
//! op.succeed(opsd_client::pack_struct(&Default::default())).await?;
//! # Ok(())
//! # }
//! ```

use std::time::Duration;

use opsd_proto::opsd::v1 as pb;
use tokio::sync::watch;

use crate::{Client, ClientError, Completion, NewOperation, is_transient};

/// The message an operation fails with when its handle is dropped uncompleted.
pub const DROPPED_MESSAGE: &str = "the producer stopped without completing the operation";

#[derive(Clone, Debug)]
pub struct ProducerOptions {
    /// The lease taken at creation and renewed by heartbeats (1 s to 1 h).
    pub lease: Duration,
}

impl Default for ProducerOptions {
    fn default() -> Self {
        Self {
            lease: Duration::from_secs(30),
        }
    }
}

/// A running operation owned by this producer.
pub struct OperationHandle {
    client: Client,
    id: String,
    cancel_requested: watch::Receiver<bool>,
    background: tokio::task::JoinHandle<()>,
    completed: bool,
}

impl Client {
    /// Creates an operation with a lease and starts keeping it alive.
    pub async fn start_operation(
        &self,
        mut new: NewOperation,
        options: ProducerOptions,
    ) -> Result<OperationHandle, ClientError> {
        new.lease_duration = Some(options.lease);
        let created = self.create(new).await?;
        // The handle's heartbeats, progress and completion join the trace
        // the operation was created in.
        let client = self.in_trace(&created.trace_parent, Some(&created.trace_state));
        let id = created.operation.map(|op| op.id).unwrap_or_default();
        let (signal, cancel_requested) = watch::channel(created.cancel_requested_at.is_some());
        let background = tokio::spawn(keep_alive(
            client.clone(),
            id.clone(),
            options.lease,
            signal,
        ));
        Ok(OperationHandle {
            client,
            id,
            cancel_requested,
            background,
            completed: false,
        })
    }
}

/// Heartbeats at a third of the lease, and follows the operation with Watch
/// so a cancel request arrives as soon as it is made.
async fn keep_alive(client: Client, id: String, lease: Duration, signal: watch::Sender<bool>) {
    let mut beats = tokio::time::interval(lease / 3);
    beats.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stream = None;
    loop {
        if stream.is_none() {
            stream = client.watch(&id).await.ok();
        }
        tokio::select! {
            _ = beats.tick() => match client.heartbeat(&id, Some(lease)).await {
                Ok(answer) => {
                    if answer.cancel_requested {
                        signal.send_replace(true);
                    }
                }
                Err(error) if is_transient(&error) => {}
                // Done, gone or refused: there is nothing left to keep alive.
                Err(_) => return,
            },
            message = next(&mut stream) => match message {
                Some(op) => {
                    if op.cancel_requested_at.is_some() {
                        signal.send_replace(true);
                    }
                    if op.operation.is_some_and(|op| op.done) {
                        return;
                    }
                }
                None => stream = None,
            },
        }
    }
}

async fn next(stream: &mut Option<tonic::Streaming<pb::Operation>>) -> Option<pb::Operation> {
    match stream {
        Some(stream) => stream.message().await.ok().flatten(),
        None => std::future::pending().await,
    }
}

impl OperationHandle {
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Whether a consumer asked to cancel (for cooperative operations).
    pub fn is_cancel_requested(&self) -> bool {
        *self.cancel_requested.borrow()
    }

    /// Resolves when a consumer asks to cancel.
    pub async fn cancellation(&self) {
        let mut requested = self.cancel_requested.clone();
        let _ = requested.wait_for(|requested| *requested).await;
    }

    /// Reports progress; the answer also updates [`Self::is_cancel_requested`].
    pub async fn progress(&self, progress: pb::Progress) -> Result<(), ClientError> {
        self.client
            .update(&self.id, None, Some(progress))
            .await
            .map(drop)
    }

    /// Completes the operation with a response.
    pub async fn succeed(
        mut self,
        response: prost_types::Any,
    ) -> Result<pb::Operation, ClientError> {
        self.finish(Completion::Response(response)).await
    }

    /// Completes the operation with an error (`code` 1-16).
    pub async fn fail(mut self, code: i32, message: &str) -> Result<pb::Operation, ClientError> {
        self.finish(Completion::Error(status(code, message))).await
    }

    /// Tells consumers at once that the work failed (`code` 1-16) while this
    /// producer goes on cleaning up; the operation stays running (and leased),
    /// and can now only be completed with an error, for instance by
    /// [`Self::fail_as_reported`]. A later report replaces this one.
    pub async fn report_failure(
        &self,
        code: i32,
        message: &str,
    ) -> Result<pb::Operation, ClientError> {
        self.client
            .report_failure(&self.id, status(code, message))
            .await
    }

    /// Completes the operation with the failure reported last, once cleanup is over.
    pub async fn fail_as_reported(mut self) -> Result<pb::Operation, ClientError> {
        self.finish(Completion::ReportedFailure).await
    }

    /// Retries transient failures for a while: the handle is gone after this,
    /// and an unsent completion would turn into ABORTED on drop.
    async fn finish(&mut self, completion: Completion) -> Result<pb::Operation, ClientError> {
        let mut delay = Duration::from_millis(100);
        let give_up = tokio::time::Instant::now() + Duration::from_secs(30);
        let result = loop {
            match self.client.complete(&self.id, completion.clone()).await {
                Err(error) if is_transient(&error) && tokio::time::Instant::now() < give_up => {
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
                other => break other,
            }
        };
        // Whatever the answer, the work is over: do not fail it again on drop.
        self.completed = true;
        self.background.abort();
        result
    }
}

fn status(code: i32, message: &str) -> opsd_proto::RpcStatus {
    opsd_proto::RpcStatus {
        code,
        message: message.to_owned(),
        details: Vec::new(),
    }
}

impl Drop for OperationHandle {
    fn drop(&mut self) {
        self.background.abort();
        if self.completed {
            return;
        }
        // The work is gone: say so now rather than when the lease lapses.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let (client, id) = (self.client.clone(), self.id.clone());
            runtime.spawn(async move {
                let failure =
                    Completion::Error(status(tonic::Code::Aborted as i32, DROPPED_MESSAGE));
                // Should this fail too, the lease lapses and the reaper fails it.
                let _ = client.complete(&id, failure).await;
            });
        }
    }
}
