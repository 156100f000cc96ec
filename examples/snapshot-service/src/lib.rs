//! A toy disk-snapshot service: each snapshot request becomes an opsd
//! operation that the service works on in steps, reporting progress, honouring
//! cooperative cancel, and completing with a typed response.

use std::time::Duration;

use opsd_client::{
    CancellationPolicy, Client, ClientError, NewOperation, OperationHandle, ProducerOptions,
    Progress,
};

/// The response of a finished snapshot, packed as `opsd.example.v1.Snapshot`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Snapshot {
    #[prost(string, tag = "1")]
    pub snapshot_id: String,
    #[prost(string, tag = "2")]
    pub disk_id: String,
    #[prost(int64, tag = "3")]
    pub size_bytes: i64,
}

impl prost::Name for Snapshot {
    const NAME: &'static str = "Snapshot";
    const PACKAGE: &'static str = "opsd.example.v1";
}

/// How a snapshot is worked on.
#[derive(Clone, Debug)]
pub struct Work {
    pub steps: i64,
    pub step_time: Duration,
}

impl Default for Work {
    fn default() -> Self {
        Self {
            steps: 10,
            step_time: Duration::from_secs(1),
        }
    }
}

/// Creates the operation (one snapshot per disk at a time) and returns its
/// handle; run [`work`] with it.
pub async fn start(client: &Client, disk_id: &str) -> Result<OperationHandle, ClientError> {
    let request = NewOperation {
        resource_id: Some(disk_id.to_owned()),
        exclusive: true,
        cancellation_policy: CancellationPolicy::Cooperative,
        id_prefix: Some("snp".to_owned()),
        ..NewOperation::new(format!("snapshot {disk_id}"))
    };
    client
        .start_operation(request, ProducerOptions::default())
        .await
}

/// Copies the disk step by step; stops early when a cancel is requested.
pub async fn work(
    operation: OperationHandle,
    disk_id: &str,
    work: &Work,
) -> Result<(), ClientError> {
    for step in 1..=work.steps {
        tokio::select! {
            () = operation.cancellation() => {
                operation.fail(1, "snapshot cancelled on request").await?;
                return Ok(());
            }
            () = tokio::time::sleep(work.step_time) => {}
        }
        operation
            .progress(Progress {
                work_done: step,
                work_total: work.steps,
                message: format!("copied {step} of {} chunks", work.steps),
                steps: Vec::new(),
            })
            .await?;
    }
    let snapshot = Snapshot {
        snapshot_id: format!("snap-{}", operation.id()),
        disk_id: disk_id.to_owned(),
        size_bytes: work.steps * (64 << 20),
    };
    operation.succeed(opsd_client::pack(&snapshot)).await?;
    Ok(())
}
