//! One module per verb: its arguments and the request they make.

pub mod cancel;
pub mod complete;
pub mod create;
pub mod events;
pub mod get;
pub mod list;
pub mod overview;
pub mod progress;
pub mod report_failure;
pub mod wait;
pub mod watch;

use opsd_client::{Client, ClientError, Completion, NewOperation, Operation};

use crate::Command;

/// A checked request, ready to send.
pub enum Request {
    Get(String),
    Cancel(String),
    Create(NewOperation),
    Complete(String, Completion),
    Progress(String, opsd_client::Progress),
    ReportFailure(String, opsd_proto::RpcStatus),
}

impl Request {
    pub fn from_command(command: Command) -> anyhow::Result<Self> {
        Ok(match command {
            Command::Get(args) => Request::Get(args.id),
            Command::Cancel(args) => Request::Cancel(args.id),
            Command::Create(args) => Request::Create(args.into_request()?),
            Command::Complete(args) => {
                let completion = args.completion()?;
                Request::Complete(args.id, completion)
            }
            Command::Progress(args) => Request::Progress(args.id.clone(), args.progress()),
            Command::ReportFailure(args) => Request::ReportFailure(args.id.clone(), args.status()),
            Command::Wait(_)
            | Command::Watch(_)
            | Command::List(_)
            | Command::Overview(_)
            | Command::Events(_)
            | Command::Completions { .. } => {
                unreachable!("handled by run")
            }
        })
    }

    /// The operation as the request left it, and the id of the trace it was
    /// created in (when the answer carries it).
    pub async fn send(self, client: &Client) -> Result<(Operation, Option<String>), ClientError> {
        Ok(match self {
            // opsd's own Get: the same operation, with its trace.
            Request::Get(id) => public(client.get_details(&id).await?),
            Request::Cancel(id) => (client.cancel(&id).await?, None),
            Request::Create(new) => public(client.create(new).await?),
            Request::Complete(id, completion) => public(client.complete(&id, completion).await?),
            Request::Progress(id, progress) => {
                public(client.update(&id, None, Some(progress)).await?)
            }
            Request::ReportFailure(id, status) => public(client.report_failure(&id, status).await?),
        })
    }
}

fn public(op: opsd_client::OpsdOperation) -> (Operation, Option<String>) {
    let trace_id = opsd_client::trace_id_of(&op.trace_parent);
    (op.operation.unwrap_or_default(), trace_id)
}

/// A JSON object as `google.protobuf.Struct` packed in `Any`.
pub fn struct_from_json(flag: &str, json: &str) -> anyhow::Result<prost_types::Any> {
    let value: serde_json::Value =
        serde_json::from_str(json).map_err(|e| anyhow::anyhow!("{flag}: not valid json: {e}"))?;
    anyhow::ensure!(value.is_object(), "{flag}: must be a json object");
    let bytes = opsd_proto::json::encoded_from_json("google.protobuf.Struct", json)
        .map_err(|e| anyhow::anyhow!("{flag}: {e}"))?;
    let parsed: prost_types::Struct = prost::Message::decode(bytes.as_slice())?;
    Ok(opsd_client::pack_struct(&parsed))
}
