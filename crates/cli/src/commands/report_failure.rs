#[derive(Clone, Debug, clap::Args)]
pub struct Args {
    /// The operation id.
    pub id: String,
    /// The failure's google.rpc.Code (1-16).
    #[arg(long)]
    pub error_code: i32,
    /// The failure's message.
    #[arg(long)]
    pub error_message: String,
}

impl Args {
    pub fn status(&self) -> opsd_proto::RpcStatus {
        opsd_proto::RpcStatus {
            code: self.error_code,
            message: self.error_message.clone(),
            details: Vec::new(),
        }
    }
}
