use opsd_client::{ListOperationsRequest, StateFilter};

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum State {
    Any,
    Running,
    Done,
}

#[derive(Clone, Debug, clap::Args)]
pub struct Args {
    /// Only operations on this resource.
    #[arg(long)]
    pub resource_id: Option<String>,
    /// Only operations created by this principal.
    #[arg(long)]
    pub created_by: Option<String>,
    /// Only operations in this scope.
    #[arg(long)]
    pub scope: Option<String>,
    /// Only operations whose id starts with this ([0-9a-z], at most 20 characters).
    #[arg(long)]
    pub id_prefix: Option<String>,
    /// Only operations whose description contains this text, ignoring case.
    #[arg(long)]
    pub description_contains: Option<String>,
    #[arg(long, value_enum, default_value = "any")]
    pub state: State,
    /// Operations per page, 1-1000.
    #[arg(long, default_value_t = 100)]
    pub page_size: i32,
    /// Continue from a previous page's token.
    #[arg(long, default_value = "")]
    pub page_token: String,
}

impl Args {
    pub fn request(&self) -> ListOperationsRequest {
        ListOperationsRequest {
            resource_id: self.resource_id.clone().unwrap_or_default(),
            created_by: self.created_by.clone().unwrap_or_default(),
            scope: self.scope.clone().unwrap_or_default(),
            id_prefix: self.id_prefix.clone().unwrap_or_default(),
            description_contains: self.description_contains.clone().unwrap_or_default(),
            state: match self.state {
                State::Any => StateFilter::Any,
                State::Running => StateFilter::Running,
                State::Done => StateFilter::Done,
            }
            .into(),
            page_size: self.page_size,
            page_token: self.page_token.clone(),
            ..Default::default()
        }
    }
}
