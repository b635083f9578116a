//! [`Watcher`]: one job's events and its agents' progress, live, until the job settles —
//! what `baton watch` and `baton submit --follow` print, without the printing.

use std::collections::{HashSet, VecDeque};
use std::time::Duration;

use baton_protocol::messages::{Event, Progress, StatusReply, SubmitReply, SubmitRequest};
use futures::StreamExt;
use uuid::Uuid;

use crate::client::{Client, is_settled};
use crate::error::Error;
use crate::feed::Feed;

/// Once the job has settled, events still in flight are taken until the subscription has
/// been quiet this long: they were published before the status said so.
const DRAIN_QUIET: Duration = Duration::from_millis(200);

/// How often the status is read when nothing arrives: an end published while the
/// connection was reconnecting is lost, and the status read finds it.
const RECHECK: Duration = Duration::from_millis(500);

/// What a [`Watcher`] saw.
#[derive(Debug, Clone, PartialEq)]
pub enum Update {
    /// One of the job's events: from the history first, then live, each once.
    Event(Event),
    /// Something one of the job's agents reported while it worked.
    Progress(Progress),
    /// The job ended or escalated; the last update.
    Settled(StatusReply),
}

enum State {
    /// Read the status before waiting again: something arrived.
    Check,
    Live,
    /// Settled: taking the events still in flight.
    Draining(StatusReply),
    Done,
}

/// Subscriptions to one job's events and progress, opened before anything can be missed,
/// and the status reads that tell when it has settled. Poll [`Watcher::next`] until it
/// returns `None`; bound the whole watch with a timeout of your own.
pub struct Watcher {
    client: Client,
    job: Uuid,
    events: Feed<Event>,
    progress: Feed<Progress>,
    history: VecDeque<Event>,
    /// Events already given out, as their JSON (history and live copies overlap).
    seen: HashSet<String>,
    state: State,
}

impl Watcher {
    /// Watches a job that exists. What happened before is in its decision log
    /// (`baton.jobs.trace`): pass it to [`Watcher::with_history`].
    pub async fn job(client: &Client, job: Uuid) -> Result<Self, Error> {
        let events = client.events(Some(job)).await?;
        let progress = client.progress(Some(job)).await?;
        Ok(Self::new(client, job, events, progress))
    }

    /// Submits a job and watches it from its first event, `job_created`: the subscriptions
    /// (to every job's events and progress, since the id is only known from the reply)
    /// are in place before the submit is sent.
    pub async fn submit(
        client: &Client,
        request: &SubmitRequest,
    ) -> Result<(SubmitReply, Self), Error> {
        let events = client.events(None).await?;
        let progress = client.progress(None).await?;
        let reply = client.submit(request).await?;
        let watcher = Self::new(client, reply.job_id, events, progress);
        Ok((reply, watcher))
    }

    fn new(client: &Client, job: Uuid, events: Feed<Event>, progress: Feed<Progress>) -> Self {
        Self {
            client: client.clone(),
            job,
            events,
            progress,
            history: VecDeque::new(),
            seen: HashSet::new(),
            state: State::Check,
        }
    }

    /// Gives out `history` (in decision order) before anything live; live copies of these
    /// events are not given out again.
    pub fn with_history(mut self, mut history: Vec<Event>) -> Self {
        baton_protocol::messages::sort_decisions(&mut history);
        for event in history {
            if let Ok(key) = serde_json::to_string(&event) {
                self.seen.insert(key);
            }
            self.history.push_back(event);
        }
        self
    }

    pub fn job_id(&self) -> Uuid {
        self.job
    }

    /// The next update; `None` after [`Update::Settled`]. The status is read before the
    /// first wait and after each message, so a job that settled before the watch began is
    /// seen at once.
    pub async fn next(&mut self) -> Result<Option<Update>, Error> {
        loop {
            if let Some(event) = self.history.pop_front() {
                return Ok(Some(Update::Event(event)));
            }
            match self.state {
                State::Done => return Ok(None),
                State::Draining(_) => {
                    if let Ok(Some(event)) =
                        tokio::time::timeout(DRAIN_QUIET, self.events.next()).await
                    {
                        if self.fresh(&event) {
                            return Ok(Some(Update::Event(event)));
                        }
                        continue;
                    }
                    if let State::Draining(status) = std::mem::replace(&mut self.state, State::Done)
                    {
                        return Ok(Some(Update::Settled(status)));
                    }
                }
                State::Check => {
                    self.state = State::Live;
                    if let Some(status) = self.client.read_status(self.job).await?
                        && is_settled(status.status)
                    {
                        self.state = State::Draining(status);
                    }
                }
                State::Live => {
                    // Events first when both are ready: they usually caused the progress.
                    tokio::select! {
                        biased;
                        event = self.events.next() => {
                            let Some(event) = event else {
                                return Err(Error::SubscriptionClosed);
                            };
                            if self.fresh(&event) {
                                self.state = State::Check;
                                return Ok(Some(Update::Event(event)));
                            }
                        }
                        progress = self.progress.next() => {
                            if let Some(progress) = progress
                                && progress.job_id == self.job
                            {
                                self.state = State::Check;
                                return Ok(Some(Update::Progress(progress)));
                            }
                        }
                        () = tokio::time::sleep(RECHECK) => self.state = State::Check,
                    }
                }
            }
        }
    }

    /// Whether an event is this job's and not given out before.
    fn fresh(&mut self, event: &Event) -> bool {
        if event.job_id != self.job {
            return false;
        }
        match serde_json::to_string(event) {
            Ok(key) => self.seen.insert(key),
            Err(_) => true,
        }
    }
}
