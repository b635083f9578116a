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
    /// Connects with the NATS flags; invalid flags are a [`crate::ConfigError`].
    pub(crate) async fn connect(args: &baton_nats::NatsArgs) -> anyhow::Result<Self> {
        let options = args.options("baton-cli").map_err(crate::ConfigError)?;
        Self::connect_with(&options).await
    }

    pub(crate) async fn connect_with(options: &baton_nats::NatsOptions) -> anyhow::Result<Self> {
        let nats = match baton_nats::connect_once(options, Duration::from_secs(15)).await {
            Ok(nats) => nats,
            Err(baton_nats::Error::Config(message)) => {
                return Err(crate::ConfigError(message).into());
            }
            Err(error) => return Err(anyhow!("{error}")),
        };
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
