//! Waiting for an operation to finish, done right: follow its changes with
//! Watch (no polling), reconnect through restarts and outages with jittered
//! backoff, fall back to polling Get (at the server's suggested interval)
//! against servers without opsd's extensions, and surface a failed operation
//! as an error carrying its `google.rpc.Status`.
//!
//! The wait ends only when the operation is done, an answer is final (such as
//! NOT_FOUND), or the caller's timeout passes; or, when the caller asks for it,
//! as soon as the producer reports a failure while still cleaning up (the
//! operation is then not done, yet carries an error). Dropping the future
//! cancels it.

use std::time::Duration;

use opsd_proto::opsd::v1 as pb;
use opsd_proto::yandex::cloud::operation as ycop;
use rand::Rng;
use tonic::Code;

use crate::{Client, ClientError};

/// How [`Client::wait_until_done`] waits.
#[derive(Clone, Debug)]
pub struct WaitOptions {
    /// Give up after this long (`ClientError::WaitTimedOut`); `None` waits as long as it takes.
    pub timeout: Option<Duration>,
    /// Polling interval when the server neither streams nor suggests one.
    pub poll_interval: Duration,
    /// The longest pause between retries of transient failures.
    pub max_backoff: Duration,
    /// End the wait with [`ClientError::FailureReported`] as soon as the
    /// producer reports a failure, instead of waiting for its cleanup to
    /// finish (`done`). Off by default.
    pub stop_at_reported_failure: bool,
}

impl Default for WaitOptions {
    fn default() -> Self {
        Self {
            timeout: None,
            poll_interval: Duration::from_secs(1),
            max_backoff: Duration::from_secs(10),
            stop_at_reported_failure: false,
        }
    }
}

/// Answers worth asking again: the server or its storage is briefly away.
pub fn is_transient(error: &ClientError) -> bool {
    match error {
        ClientError::Rpc(status) => matches!(
            status.code(),
            Code::Unavailable | Code::ResourceExhausted | Code::Unknown
        ),
        ClientError::Connect { .. } => true,
        _ => false,
    }
}

/// Exponential backoff with jitter: each pause is half to all of the
/// current step, which doubles up to `max`.
pub(crate) struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    pub(crate) fn new(max: Duration) -> Self {
        Self {
            next: Duration::from_millis(50),
            max,
        }
    }

    pub(crate) async fn pause(&mut self) {
        let jittered = self.next.mul_f64(rand::rng().random_range(0.5..1.0));
        tokio::time::sleep(jittered).await;
        self.next = (self.next * 2).min(self.max);
    }

    pub(crate) fn reset(&mut self) {
        self.next = Duration::from_millis(50);
    }
}

impl Client {
    /// Waits until the operation is done and returns it, or
    /// [`ClientError::OperationFailed`] when it finished with an error.
    pub async fn wait_until_done(
        &self,
        operation_id: &str,
        options: WaitOptions,
    ) -> Result<pb::Operation, ClientError> {
        let wait = self.follow(operation_id, &options);
        let done = match options.timeout {
            Some(limit) => tokio::time::timeout(limit, wait).await.map_err(|_| {
                ClientError::WaitTimedOut {
                    operation_id: operation_id.to_owned(),
                }
            })??,
            None => wait.await?,
        };
        let Some(op) = done.operation.as_ref() else {
            return Ok(done);
        };
        match &op.result {
            Some(ycop::operation::Result::Error(status)) if op.done => {
                Err(ClientError::OperationFailed {
                    operation_id: operation_id.to_owned(),
                    status: status.clone(),
                })
            }
            Some(ycop::operation::Result::Error(status)) => Err(ClientError::FailureReported {
                operation_id: operation_id.to_owned(),
                status: status.clone(),
            }),
            _ => Ok(done),
        }
    }

    async fn follow(
        &self,
        operation_id: &str,
        options: &WaitOptions,
    ) -> Result<pb::Operation, ClientError> {
        let mut backoff = Backoff::new(options.max_backoff);
        loop {
            match self.watch(operation_id).await {
                Ok(mut stream) => {
                    backoff.reset();
                    loop {
                        match stream.message().await {
                            Ok(Some(op)) if is_finished(&op, options) => return Ok(op),
                            Ok(Some(_)) => {}
                            // The stream ended early (server shutting down): watch again.
                            Ok(None) => break,
                            Err(status) => {
                                let error = ClientError::Rpc(status);
                                if !is_transient(&error) {
                                    return Err(error);
                                }
                                break;
                            }
                        }
                    }
                }
                // A server without Watch, or one holding as many watchers as it
                // allows: polling Get needs neither.
                Err(ClientError::Rpc(status))
                    if matches!(status.code(), Code::Unimplemented | Code::ResourceExhausted) =>
                {
                    return self.poll(operation_id, options).await;
                }
                Err(error) if is_transient(&error) => {}
                Err(error) => return Err(error),
            }
            backoff.pause().await;
        }
    }

    /// Get, again and again, at the interval the server suggests.
    async fn poll(
        &self,
        operation_id: &str,
        options: &WaitOptions,
    ) -> Result<pb::Operation, ClientError> {
        let mut backoff = Backoff::new(options.max_backoff);
        loop {
            let request = ycop::GetOperationRequest {
                operation_id: operation_id.to_owned(),
            };
            match self.operations.clone().get(request).await {
                Ok(response) => {
                    backoff.reset();
                    let hint = response
                        .metadata()
                        .get("x-operation-poll-interval")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<u64>().ok())
                        .map(Duration::from_secs);
                    let op = response.into_inner();
                    if op.done || (options.stop_at_reported_failure && has_error(&op)) {
                        return Ok(pb::Operation {
                            operation: Some(op),
                            ..Default::default()
                        });
                    }
                    tokio::time::sleep(hint.unwrap_or(options.poll_interval)).await;
                }
                Err(status) => {
                    let error = ClientError::Rpc(status);
                    if !is_transient(&error) {
                        return Err(error);
                    }
                    backoff.pause().await;
                }
            }
        }
    }
}

/// Done, or (when the caller asked to stop there) showing a reported failure.
fn is_finished(op: &pb::Operation, options: &WaitOptions) -> bool {
    op.operation
        .as_ref()
        .is_some_and(|op| op.done || (options.stop_at_reported_failure && has_error(op)))
}

fn has_error(op: &ycop::Operation) -> bool {
    matches!(op.result, Some(ycop::operation::Result::Error(_)))
}

/// Unpacks a packed message, checking its type URL names `T`.
pub fn unpack<T: prost::Name + Default>(any: &prost_types::Any) -> Result<T, ClientError> {
    let expected = T::full_name();
    let actual = any.type_url.rsplit('/').next().unwrap_or_default();
    if actual != expected {
        return Err(ClientError::TypeMismatch {
            expected,
            actual: any.type_url.clone(),
        });
    }
    T::decode(any.value.as_slice()).map_err(|e| ClientError::TypeMismatch {
        expected,
        actual: format!("{} (undecodable: {e})", any.type_url),
    })
}

/// Typed access to a finished operation's payloads.
pub trait OperationExt {
    /// The response, unpacked as `T`.
    fn response<T: prost::Name + Default>(&self) -> Result<T, ClientError>;
    /// The metadata, unpacked as `T`.
    fn metadata<T: prost::Name + Default>(&self) -> Result<T, ClientError>;
}

impl OperationExt for ycop::Operation {
    fn response<T: prost::Name + Default>(&self) -> Result<T, ClientError> {
        match &self.result {
            Some(ycop::operation::Result::Response(any)) => unpack(any),
            _ => Err(ClientError::NoPayload { what: "response" }),
        }
    }

    fn metadata<T: prost::Name + Default>(&self) -> Result<T, ClientError> {
        match &self.metadata {
            Some(any) => unpack(any),
            None => Err(ClientError::NoPayload { what: "metadata" }),
        }
    }
}

impl OperationExt for pb::Operation {
    fn response<T: prost::Name + Default>(&self) -> Result<T, ClientError> {
        self.operation
            .as_ref()
            .ok_or(ClientError::NoPayload { what: "response" })?
            .response()
    }

    fn metadata<T: prost::Name + Default>(&self) -> Result<T, ClientError> {
        self.operation
            .as_ref()
            .ok_or(ClientError::NoPayload { what: "metadata" })?
            .metadata()
    }
}
