use opsd_client::{CancellationPolicy, NewOperation};

#[derive(Clone, Debug, clap::Args)]
pub struct Args {
    /// What the operation does, 0-256 characters.
    #[arg(long, default_value = "")]
    pub description: String,
    /// The resource the operation acts on.
    #[arg(long)]
    pub resource_id: Option<String>,
    /// Initial metadata: a JSON object, sent as google.protobuf.Struct.
    #[arg(long)]
    pub metadata_json: Option<String>,
    /// Cancel fails with FAILED_PRECONDITION.
    #[arg(long, conflicts_with = "cooperative_cancel")]
    pub not_cancellable: bool,
    /// Cancel only marks the operation; the producer completes it.
    #[arg(long)]
    pub cooperative_cancel: bool,
    /// Repeating a create with the same key returns the first operation.
    #[arg(long)]
    pub idempotency_key: Option<String>,
    /// Three-character id prefix naming the producing service.
    #[arg(long)]
    pub id_prefix: Option<String>,
}

impl Args {
    pub fn into_request(self) -> anyhow::Result<NewOperation> {
        let metadata = self
            .metadata_json
            .as_deref()
            .map(|json| super::struct_from_json("--metadata-json", json))
            .transpose()?;
        let cancellation_policy = if self.not_cancellable {
            CancellationPolicy::NotCancellable
        } else if self.cooperative_cancel {
            CancellationPolicy::Cooperative
        } else {
            CancellationPolicy::Immediate
        };
        Ok(NewOperation {
            description: self.description,
            resource_id: self.resource_id,
            metadata,
            cancellation_policy,
            idempotency_key: self.idempotency_key,
            id_prefix: self.id_prefix,
            ..NewOperation::default()
        })
    }
}
