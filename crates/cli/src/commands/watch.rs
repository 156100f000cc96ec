use opsd_client::{EventKind, FeedFilter};

#[derive(Clone, Debug, clap::Args)]
#[command(group = clap::ArgGroup::new("what").required(true).args(["id", "all"]))]
pub struct Args {
    /// The operation id: its state, then every change, until it is done.
    #[arg(conflicts_with = "all")]
    pub id: Option<String>,
    /// Follow the events of every operation you may see (the change feed),
    /// reconnecting by itself, until interrupted.
    #[arg(long)]
    pub all: bool,
    /// With --all: only operations on this resource.
    #[arg(long, conflicts_with = "id")]
    pub resource_id: Option<String>,
    /// With --all: only operations in this scope.
    #[arg(long, conflicts_with = "id")]
    pub scope: Option<String>,
    /// With --all: only operations created by this principal.
    #[arg(long, conflicts_with = "id")]
    pub created_by: Option<String>,
    /// With --all: only operations whose id starts with this.
    #[arg(long, conflicts_with = "id")]
    pub id_prefix: Option<String>,
    /// With --all: only events of this kind (repeatable).
    #[arg(long = "kind", value_name = "KIND", value_enum, conflicts_with = "id")]
    pub kinds: Vec<Kind>,
    /// With --all: continue after the event that carried this token (printed
    /// with each event by --format json, and on stderr at Ctrl-C).
    #[arg(long, conflicts_with = "id")]
    pub resume_token: Option<String>,
}

/// The kinds of event, by the names the timeline prints.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Kind {
    #[value(name = "created")]
    Created,
    #[value(name = "metadata_updated", alias = "metadata-updated")]
    MetadataUpdated,
    #[value(name = "lease_taken", alias = "lease-taken")]
    LeaseTaken,
    #[value(name = "lease_lapsed", alias = "lease-lapsed")]
    LeaseLapsed,
    #[value(name = "cancel_requested", alias = "cancel-requested")]
    CancelRequested,
    #[value(name = "failure_reported", alias = "failure-reported")]
    FailureReported,
    #[value(name = "completed")]
    Completed,
    #[value(name = "deadline_exceeded", alias = "deadline-exceeded")]
    DeadlineExceeded,
}

impl From<Kind> for EventKind {
    fn from(kind: Kind) -> Self {
        match kind {
            Kind::Created => EventKind::Created,
            Kind::MetadataUpdated => EventKind::MetadataUpdated,
            Kind::LeaseTaken => EventKind::LeaseTaken,
            Kind::LeaseLapsed => EventKind::LeaseLapsed,
            Kind::CancelRequested => EventKind::CancelRequested,
            Kind::FailureReported => EventKind::FailureReported,
            Kind::Completed => EventKind::Completed,
            Kind::DeadlineExceeded => EventKind::DeadlineExceeded,
        }
    }
}

impl Args {
    pub fn filter(&self) -> FeedFilter {
        FeedFilter {
            scope: self.scope.clone(),
            resource_id: self.resource_id.clone(),
            created_by: self.created_by.clone(),
            id_prefix: self.id_prefix.clone(),
            kinds: self.kinds.iter().map(|kind| (*kind).into()).collect(),
        }
    }
}
