//! The NATS flags and `BATON_NATS_*` variables every Baton binary accepts (feature `cli`).
//! One definition, flattened into each binary's command line, so the names never drift apart.

use std::path::PathBuf;

use crate::{NatsOptions, Secret};

/// NATS connection flags. Secrets are best passed through the environment (or files: nkey
/// seeds and `.creds`), since command lines are visible to other users of the machine;
/// `--help` never prints the environment's values.
#[derive(Debug, Clone, clap::Args)]
pub struct NatsArgs {
    /// NATS server URL(s), comma-separated (`tls://` to require TLS).
    #[arg(
        long,
        global = true,
        env = "BATON_NATS_URL",
        default_value = "nats://127.0.0.1:4222",
        hide_env_values = true
    )]
    pub nats_url: String,
    /// NATS user name (with --nats-password).
    #[arg(long, global = true, env = "BATON_NATS_USER")]
    pub nats_user: Option<String>,
    /// NATS password of --nats-user.
    #[arg(
        long,
        global = true,
        env = "BATON_NATS_PASSWORD",
        hide_env_values = true
    )]
    pub nats_password: Option<Secret>,
    /// NATS authentication token.
    #[arg(long, global = true, env = "BATON_NATS_TOKEN", hide_env_values = true)]
    pub nats_token: Option<Secret>,
    /// File holding a NATS nkey seed.
    #[arg(long, global = true, env = "BATON_NATS_NKEY")]
    pub nats_nkey: Option<PathBuf>,
    /// NATS credentials file (`.creds`: user JWT and nkey seed).
    #[arg(long, global = true, env = "BATON_NATS_CREDS")]
    pub nats_creds: Option<PathBuf>,
    /// PEM file of the CA(s) that signed the NATS server's certificate.
    #[arg(long, global = true, env = "BATON_NATS_TLS_CA")]
    pub nats_tls_ca: Option<PathBuf>,
    /// PEM client certificate for mutual TLS with NATS (with --nats-tls-key).
    #[arg(long, global = true, env = "BATON_NATS_TLS_CERT")]
    pub nats_tls_cert: Option<PathBuf>,
    /// PEM private key of --nats-tls-cert.
    #[arg(long, global = true, env = "BATON_NATS_TLS_KEY")]
    pub nats_tls_key: Option<PathBuf>,
    /// Refuse to talk to a NATS server without TLS.
    #[arg(long, global = true, env = "BATON_NATS_TLS_REQUIRED")]
    pub nats_tls_required: bool,
    /// Prefix of this process's reply subjects (default `_INBOX`); see docs/security.md.
    #[arg(long, global = true, env = "BATON_NATS_INBOX_PREFIX")]
    pub nats_inbox_prefix: Option<String>,
}

impl NatsArgs {
    /// Lays the flags over `options` (e.g. the coordinator's options file): the URL always,
    /// every other setting when given.
    pub fn apply(&self, options: &mut NatsOptions) {
        options.url = self.nats_url.clone();
        set(&mut options.user, &self.nats_user);
        set(&mut options.password, &self.nats_password);
        set(&mut options.token, &self.nats_token);
        set(&mut options.nkey, &self.nats_nkey);
        set(&mut options.creds, &self.nats_creds);
        set(&mut options.tls_ca, &self.nats_tls_ca);
        set(&mut options.tls_cert, &self.nats_tls_cert);
        set(&mut options.tls_key, &self.nats_tls_key);
        set(&mut options.inbox_prefix, &self.nats_inbox_prefix);
        options.tls_required |= self.nats_tls_required;
    }

    /// Options named `name` from these flags alone, validated.
    pub fn options(&self, name: &str) -> Result<NatsOptions, String> {
        let mut options = NatsOptions {
            name: name.to_owned(),
            ..NatsOptions::default()
        };
        self.apply(&mut options);
        options.validate()?;
        Ok(options)
    }
}

fn set<T: Clone>(target: &mut Option<T>, value: &Option<T>) {
    if value.is_some() {
        target.clone_from(value);
    }
}
