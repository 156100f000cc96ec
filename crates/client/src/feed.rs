//! Timelines and the change feed: an operation's events
//! (`ListEvents`), and the events of every operation the caller may see, in
//! commit order (`WatchOperations`).
//!
//! Each feed message carries a resume token: reconnecting with the token of
//! the last event handled continues with the next matching event, so no event
//! is missed and none comes twice. [`Client::follow_operations`] does that by
//! itself: when the server goes away (UNAVAILABLE, a dropped or reset
//! connection, a server draining for shutdown, too many feed readers for
//! now) it waits a jittered, growing pause and
//! reconnects with the token of the last event it handed out. A token older
//! than the events the server still keeps is OUT_OF_RANGE, surfaced as
//! [`ClientError::FeedTooOld`]: list the operations again, then follow from
//! now.

use std::sync::Arc;
use std::time::Duration;

use opsd_proto::opsd::v1 as pb;
use tonic::Code;

use crate::wait::Backoff;
use crate::{Client, ClientError, is_transient};

pub use pb::{Event, EventKind, ListEventsResponse, WatchOperationsResponse};

/// Which events the feed delivers; every field left empty matches everything
/// the caller may see.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FeedFilter {
    /// Only operations in this scope (always limited to the caller's scopes).
    pub scope: Option<String>,
    /// Only operations on this resource.
    pub resource_id: Option<String>,
    /// Only operations created by this principal.
    pub created_by: Option<String>,
    /// Only operations whose id starts with this.
    pub id_prefix: Option<String>,
    /// Only these kinds of event; empty means every kind.
    pub kinds: Vec<EventKind>,
}

impl FeedFilter {
    fn request(&self, resume_token: Option<&str>) -> pb::WatchOperationsRequest {
        pb::WatchOperationsRequest {
            scope: self.scope.clone().unwrap_or_default(),
            resource_id: self.resource_id.clone().unwrap_or_default(),
            created_by: self.created_by.clone().unwrap_or_default(),
            id_prefix: self.id_prefix.clone().unwrap_or_default(),
            kinds: self.kinds.iter().map(|kind| i32::from(*kind)).collect(),
            resume_token: resume_token.unwrap_or_default().to_owned(),
        }
    }
}

/// One event of the feed, with the token that resumes after it.
#[derive(Clone, Debug, PartialEq)]
pub struct FeedEvent {
    pub event: Event,
    pub resume_token: String,
}

impl From<FeedEvent> for WatchOperationsResponse {
    fn from(item: FeedEvent) -> Self {
        WatchOperationsResponse {
            event: Some(item.event),
            resume_token: item.resume_token,
        }
    }
}

/// What a follower tells [`FollowOptions::notify`] while it rides out a failure.
#[derive(Debug)]
pub enum FeedNotice<'a> {
    /// The feed was interrupted (the connection dropped, the server drained,
    /// UNAVAILABLE), or an attempt to reopen it failed; another attempt
    /// follows after a pause.
    Interrupted(&'a ClientError),
    /// The feed is open again, after the last event handed out.
    Resumed,
}

/// Told of interruptions and resumptions, e.g. to log them.
pub type FeedHook = Arc<dyn Fn(FeedNotice<'_>) + Send + Sync>;

/// How [`Client::follow_operations`] resumes.
#[derive(Clone)]
pub struct FollowOptions {
    /// The longest pause between reconnection attempts.
    pub max_backoff: Duration,
    /// Called with every transient failure before the next attempt, and
    /// once the feed is open again. The follower resumes regardless.
    pub notify: Option<FeedHook>,
}

impl Default for FollowOptions {
    fn default() -> Self {
        Self {
            max_backoff: Duration::from_secs(10),
            notify: None,
        }
    }
}

impl std::fmt::Debug for FollowOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FollowOptions")
            .field("max_backoff", &self.max_backoff)
            .field("notify", &self.notify.is_some())
            .finish()
    }
}

/// A reader of the change feed. [`OperationFeed::next`] is cancel-safe: an
/// event is handed out, and its token kept, in the same step it is read.
pub struct OperationFeed {
    client: Client,
    filter: FeedFilter,
    resume_token: Option<String>,
    stream: Option<tonic::Streaming<WatchOperationsResponse>>,
    /// Set for a follower: how it waits between reconnections.
    follow: Option<Follower>,
}

struct Follower {
    options: FollowOptions,
    backoff: Backoff,
    /// Whether an interruption was announced and no resumption yet.
    interrupted: bool,
}

impl Follower {
    fn notify(&mut self, notice: FeedNotice<'_>) {
        match notice {
            FeedNotice::Interrupted(_) => self.interrupted = true,
            FeedNotice::Resumed if !self.interrupted => return,
            FeedNotice::Resumed => self.interrupted = false,
        }
        if let Some(hook) = &self.options.notify {
            hook(notice);
        }
    }
}

impl std::fmt::Debug for OperationFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OperationFeed")
            .field("filter", &self.filter)
            .field("resume_token", &self.resume_token)
            .field("connected", &self.stream.is_some())
            .field("follows", &self.follow.is_some())
            .finish()
    }
}

impl OperationFeed {
    /// The token of the last event handed out (or the one the feed started
    /// from): pass it to a later [`Client::follow_operations`] to continue
    /// after that event; before any event, the opening bookmark's.
    pub fn resume_token(&self) -> Option<&str> {
        self.resume_token.as_deref()
    }

    /// The next matching event; waits for one to be committed. `None` when
    /// the server ended the feed (only without following: a follower resumes).
    pub async fn next(&mut self) -> Result<Option<FeedEvent>, ClientError> {
        loop {
            if self.stream.is_none() {
                self.connect().await?;
            }
            let stream = self.stream.as_mut().expect("connected above");
            let interruption = match stream.message().await {
                Ok(Some(message)) => {
                    if !message.resume_token.is_empty() {
                        self.resume_token = Some(message.resume_token.clone());
                    }
                    if let Some(follower) = &mut self.follow {
                        follower.backoff.reset();
                    }
                    match message.event {
                        Some(event) => {
                            return Ok(Some(FeedEvent {
                                event,
                                resume_token: message.resume_token,
                            }));
                        }
                        None => continue,
                    }
                }
                // The server ends the feed only when it drains for shutdown.
                Ok(None) if self.follow.is_none() => {
                    self.stream = None;
                    return Ok(None);
                }
                Ok(None) => {
                    ClientError::Rpc(tonic::Status::unavailable("the server ended the feed"))
                }
                Err(status) => feed_error(status),
            };
            self.stream = None;
            match &mut self.follow {
                Some(follower) if resumable(&interruption) => {
                    follower.notify(FeedNotice::Interrupted(&interruption));
                    follower.backoff.pause().await;
                }
                _ => return Err(interruption),
            }
        }
    }

    /// Opens the stream from the last token; a follower retries what is transient.
    async fn connect(&mut self) -> Result<(), ClientError> {
        loop {
            match self
                .client
                .open_feed(&self.filter, self.resume_token.as_deref())
                .await
            {
                Ok(stream) => {
                    self.stream = Some(stream);
                    if let Some(follower) = &mut self.follow {
                        follower.notify(FeedNotice::Resumed);
                    }
                    return Ok(());
                }
                Err(error) => match &mut self.follow {
                    Some(follower) if resumable(&error) => {
                        follower.notify(FeedNotice::Interrupted(&error));
                        follower.backoff.pause().await;
                    }
                    _ => return Err(error),
                },
            }
        }
    }
}

/// What a follower rides out: what [`is_transient`] says is worth asking
/// again, and a stream the transport broke (an HTTP/2 error, a reset stream).
/// Resuming is always safe: reading the feed from a token changes nothing.
fn resumable(error: &ClientError) -> bool {
    is_transient(error)
        || error.status().is_some_and(|status| {
            status.code() == Code::Cancelled || status.message().starts_with("h2 protocol error")
        })
}

/// OUT_OF_RANGE from the feed means the token is past the server's horizon.
fn feed_error(status: tonic::Status) -> ClientError {
    if status.code() == Code::OutOfRange {
        ClientError::FeedTooOld {
            message: status.message().to_owned(),
        }
    } else {
        ClientError::Rpc(status)
    }
}

impl Client {
    /// `opsd.v1.OperationService/ListEvents`: one page of an operation's
    /// timeline, oldest first. `page_size` 0 means the server's default (100),
    /// at most 1000; pass the previous page's `next_page_token` (empty on the last page).
    pub async fn list_events(
        &self,
        operation_id: &str,
        page_size: i32,
        page_token: &str,
    ) -> Result<ListEventsResponse, ClientError> {
        let request = pb::ListEventsRequest {
            operation_id: operation_id.to_owned(),
            page_size,
            page_token: page_token.to_owned(),
        };
        Ok(self.opsd.clone().list_events(request).await?.into_inner())
    }

    /// `opsd.v1.OperationService/WatchOperations` over one connection: the
    /// feed's matching events after `resume_token` (or from now). Returns once
    /// the server has opened the feed, so every change committed after that
    /// is delivered. Errors, and the stream's end, reach the caller (a later
    /// [`OperationFeed::next`] reopens the feed once, from the last token);
    /// see [`Client::follow_operations`] for a reader that resumes by itself.
    pub async fn watch_operations(
        &self,
        filter: FeedFilter,
        resume_token: Option<String>,
    ) -> Result<OperationFeed, ClientError> {
        let stream = self.open_feed(&filter, resume_token.as_deref()).await?;
        Ok(OperationFeed {
            client: self.clone(),
            filter,
            resume_token,
            stream: Some(stream),
            follow: None,
        })
    }

    /// Like [`Client::watch_operations`], but rides out restarts, outages and
    /// draining servers: it reconnects with the token of the last event it
    /// handed out after a jittered, growing pause (at most
    /// `options.max_backoff`), so the events come in order, without a gap and
    /// without one twice. Returns once the feed is open (retrying transient
    /// failures until then); [`OperationFeed::next`] never returns `None`.
    ///
    /// A feed started from now holds a token from its first message (the
    /// server's opening bookmark), so even a reconnection before the first
    /// event misses nothing.
    pub async fn follow_operations(
        &self,
        filter: FeedFilter,
        resume_token: Option<String>,
        options: FollowOptions,
    ) -> Result<OperationFeed, ClientError> {
        let follower = Follower {
            backoff: Backoff::new(options.max_backoff),
            options,
            interrupted: false,
        };
        let mut feed = OperationFeed {
            client: self.clone(),
            filter,
            resume_token,
            stream: None,
            follow: Some(follower),
        };
        feed.connect().await?;
        Ok(feed)
    }

    async fn open_feed(
        &self,
        filter: &FeedFilter,
        resume_token: Option<&str>,
    ) -> Result<tonic::Streaming<WatchOperationsResponse>, ClientError> {
        self.opsd
            .clone()
            .watch_operations(filter.request(resume_token))
            .await
            .map(tonic::Response::into_inner)
            .map_err(feed_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filter_spells_the_request() {
        let filter = FeedFilter {
            resource_id: Some("disk-1".into()),
            kinds: vec![EventKind::Created, EventKind::Completed],
            ..FeedFilter::default()
        };
        let request = filter.request(Some("tok"));
        assert_eq!(request.resource_id, "disk-1");
        assert_eq!(request.kinds, vec![1, 7]);
        assert_eq!(request.resume_token, "tok");
        assert_eq!(request.scope, "");
        assert_eq!(FeedFilter::default().request(None).resume_token, "");
    }

    #[test]
    fn out_of_range_is_a_feed_too_old() {
        let error = feed_error(tonic::Status::out_of_range("the resume token is older"));
        assert!(matches!(error, ClientError::FeedTooOld { .. }), "{error}");
        assert!(!is_transient(&error));
        assert_eq!(error.to_string(), "OUT_OF_RANGE: the resume token is older");
        let error = feed_error(tonic::Status::unavailable("draining"));
        assert!(resumable(&error));
    }

    #[test]
    fn a_broken_stream_is_resumed_and_a_refusal_is_not() {
        for status in [
            tonic::Status::unknown("h2 protocol error: error reading a body from connection"),
            tonic::Status::internal("h2 protocol error: stream error received"),
            tonic::Status::cancelled("stream reset"),
            tonic::Status::resource_exhausted("too many open WatchOperations streams"),
        ] {
            assert!(resumable(&ClientError::Rpc(status.clone())), "{status:?}");
        }
        for status in [
            tonic::Status::invalid_argument("resume_token: is not a resume token of this feed"),
            tonic::Status::permission_denied("no"),
            tonic::Status::internal("a bug"),
            tonic::Status::unimplemented(""),
        ] {
            assert!(!resumable(&ClientError::Rpc(status.clone())), "{status:?}");
        }
    }
}
