//! A small client of the public contract: JSON requests with a timeout, replies decoded as
//! the expected body or an error reply.

use std::time::Duration;

use anyhow::{Context, anyhow};
use baton_protocol::messages::Reply;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// A connection to NATS for the client subcommands.
pub(crate) struct Client {
    pub(crate) nats: async_nats::Client,
}

impl Client {
    pub(crate) async fn connect(url: &str) -> anyhow::Result<Self> {
        let nats = async_nats::ConnectOptions::new()
            .name("baton-cli")
            .connection_timeout(Duration::from_secs(5))
            .request_timeout(Some(Duration::from_secs(15)))
            .connect(url)
            .await
            .with_context(|| format!("cannot connect to NATS at {url}"))?;
        Ok(Self { nats })
    }

    /// Sends a request and decodes the reply; an error reply becomes an error.
    pub(crate) async fn request<Q: Serialize, R: DeserializeOwned>(
        &self,
        subject: &'static str,
        body: &Q,
    ) -> anyhow::Result<R> {
        let payload = serde_json::to_vec(body)?;
        let reply = self
            .nats
            .request(subject, payload.into())
            .await
            .map_err(|error| {
                if matches!(error.kind(), async_nats::RequestErrorKind::NoResponders) {
                    anyhow!(
                        "no coordinator is answering on {subject}: is `baton coordinator` running?"
                    )
                } else {
                    anyhow!("request on {subject} failed: {error}")
                }
            })?;
        let reply: Reply<R> = serde_json::from_slice(&reply.payload)
            .with_context(|| format!("unreadable reply on {subject}"))?;
        reply
            .into_result()
            .map_err(|error| anyhow!("{} ({})", error.message, error.code))
    }
}

/// Parses a JSON argument (e.g. `--input '{"a": 1}'`).
pub(crate) fn json_arg(name: &str, raw: &str) -> anyhow::Result<serde_json::Value> {
    serde_json::from_str(raw)
        .map_err(|error| crate::ConfigError(format!("{name} is not valid JSON: {error}")).into())
}
