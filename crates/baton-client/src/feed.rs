//! A subscription whose messages arrive decoded: events, job ends, progress.

use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::{Stream, StreamExt};
use serde::de::DeserializeOwned;

/// A core NATS subscription yielding `T`s. Messages that do not decode as a `T` are skipped:
/// readers of events must ignore what they do not understand (docs/protocol.md, §1), and a
/// stray publish on a Baton subject must not end a watch. Dropping it unsubscribes.
pub struct Feed<T> {
    subscriber: async_nats::Subscriber,
    item: PhantomData<fn() -> T>,
}

impl<T> Feed<T> {
    pub(crate) fn new(subscriber: async_nats::Subscriber) -> Self {
        Self {
            subscriber,
            item: PhantomData,
        }
    }
}

impl<T: DeserializeOwned> Stream for Feed<T> {
    type Item = T;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        loop {
            match self.subscriber.poll_next_unpin(cx) {
                Poll::Ready(Some(message)) => {
                    if let Ok(item) = serde_json::from_slice(&message.payload) {
                        return Poll::Ready(Some(item));
                    }
                }
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}
