use opsd_client::{Client, Event};

#[derive(Clone, Debug, clap::Args)]
pub struct Args {
    /// The operation id.
    pub id: String,
    /// Events per ListEvents call, 1-1000; every page is read either way.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(i32).range(1..=1000))]
    pub page_size: i32,
}

/// Most pages read for one timeline: far more than an operation's event
/// limit allows, so only a server handing out the same page again reaches it.
const MAX_PAGES: usize = 100_000;

impl Args {
    /// The whole timeline, oldest first, page after page.
    pub async fn timeline(&self, client: &Client) -> anyhow::Result<Vec<Event>> {
        let mut events = Vec::new();
        let mut token = String::new();
        for _ in 0..MAX_PAGES {
            let page = client.list_events(&self.id, self.page_size, &token).await?;
            events.extend(page.events);
            if page.next_page_token.is_empty() {
                return Ok(events);
            }
            anyhow::ensure!(
                page.next_page_token != token,
                "the server returned the same page token twice"
            );
            token = page.next_page_token;
        }
        anyhow::bail!("the timeline has more than {MAX_PAGES} pages")
    }
}
