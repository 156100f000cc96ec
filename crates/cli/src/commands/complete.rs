use opsd_client::Completion;

#[derive(Clone, Debug, clap::Args)]
#[command(group = clap::ArgGroup::new("result").required(true).args(["response_json", "error_code", "as_reported"]))]
pub struct Args {
    /// The operation id.
    pub id: String,
    /// Succeed with this JSON object as the response (google.protobuf.Struct).
    #[arg(long)]
    pub response_json: Option<String>,
    /// Fail with this google.rpc.Code (1-16).
    #[arg(long, requires = "error_message")]
    pub error_code: Option<i32>,
    /// The failure's message.
    #[arg(long, requires = "error_code")]
    pub error_message: Option<String>,
    /// Fail with the failure reported earlier (`opsctl report-failure`).
    #[arg(long)]
    pub as_reported: bool,
}

impl Args {
    pub fn completion(&self) -> anyhow::Result<Completion> {
        if self.as_reported {
            return Ok(Completion::ReportedFailure);
        }
        match (&self.response_json, self.error_code) {
            (Some(json), None) => Ok(Completion::Response(super::struct_from_json(
                "--response-json",
                json,
            )?)),
            (None, Some(code)) => Ok(Completion::Error(opsd_proto::RpcStatus {
                code,
                message: self.error_message.clone().unwrap_or_default(),
                details: Vec::new(),
            })),
            _ => anyhow::bail!(
                "give one of --response-json, --error-code with --error-message, or --as-reported"
            ),
        }
    }
}
