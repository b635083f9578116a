//! How the client subcommands reach Baton: the NATS flags into a [`baton_client::Client`]
//! (invalid flags are a [`crate::ConfigError`]), and JSON arguments.

use anyhow::anyhow;
use baton_client::Client;

/// Connects with the NATS flags.
pub(crate) async fn connect(args: &baton_nats::NatsArgs) -> anyhow::Result<Client> {
    let options = args.options("baton-cli").map_err(crate::ConfigError)?;
    connect_with(&options).await
}

pub(crate) async fn connect_with(options: &baton_nats::NatsOptions) -> anyhow::Result<Client> {
    match Client::connect(options).await {
        Ok(client) => Ok(client),
        Err(baton_client::Error::Config(message)) => Err(crate::ConfigError(message).into()),
        // Its message already names the cause (and never a secret).
        Err(error) => Err(anyhow!("{error}")),
    }
}

/// Parses a JSON argument (e.g. `--input '{"a": 1}'`).
pub(crate) fn json_arg(name: &str, raw: &str) -> anyhow::Result<serde_json::Value> {
    serde_json::from_str(raw)
        .map_err(|error| crate::ConfigError(format!("{name} is not valid JSON: {error}")).into())
}
