use opsd_client::Progress;

#[derive(Clone, Debug, clap::Args)]
pub struct Args {
    /// The operation id.
    pub id: String,
    /// Units of work done.
    #[arg(long)]
    pub done: i64,
    /// Units of work in all (0: unknown).
    #[arg(long, default_value_t = 0)]
    pub total: i64,
    /// A short line saying what is happening.
    #[arg(long, default_value = "")]
    pub message: String,
}

impl Args {
    pub fn progress(&self) -> Progress {
        Progress {
            work_done: self.done,
            work_total: self.total,
            message: self.message.clone(),
            steps: Vec::new(),
        }
    }
}
