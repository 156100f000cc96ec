#[derive(Clone, Debug, clap::Args)]
pub struct Args {
    /// The operation id.
    pub id: String,
}
