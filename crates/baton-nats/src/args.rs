//! The NATS flags and `BATON_NATS_*` variables every Baton binary accepts (feature `cli`).
//! One definition, flattened into each binary's command line, so the names never drift apart.

use std::path::PathBuf;

use crate::{NatsOptions, Secret};

/// NATS connection flags. Secrets are best passed as files (`--nats-password-file`,
/// `--nats-token-file`, nkey seeds and `.creds`, e.g. mounted from a Kubernetes Secret) or
/// through the environment, since command lines are visible to other users of the machine;
/// `--help` never prints the environment's values.
///
/// No flag has a clap default: a flag or variable that is not given leaves the value of the
/// layer below (a config file, then the built-in default) in place.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct NatsArgs {
    /// NATS server URL(s), comma-separated (`tls://` to require TLS) [default:
    /// nats://127.0.0.1:4222].
    #[arg(long, global = true, env = "BATON_NATS_URL", hide_env_values = true)]
    pub nats_url: Option<String>,
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
    /// File holding the password of --nats-user (read once at start; a trailing newline is
    /// dropped).
    #[arg(long, global = true, env = "BATON_NATS_PASSWORD_FILE")]
    pub nats_password_file: Option<PathBuf>,
    /// NATS authentication token.
    #[arg(long, global = true, env = "BATON_NATS_TOKEN", hide_env_values = true)]
    pub nats_token: Option<Secret>,
    /// File holding the NATS authentication token (read once at start; a trailing newline is
    /// dropped).
    #[arg(long, global = true, env = "BATON_NATS_TOKEN_FILE")]
    pub nats_token_file: Option<PathBuf>,
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
    /// Lays the flags (and their variables) over `options` (a config file's, or the
    /// defaults): each setting when given. A password or token given here replaces the
    /// lower layer's, whether that one was given as a value or as a file.
    pub fn apply(&self, options: &mut NatsOptions) {
        if let Some(url) = &self.nats_url {
            options.url.clone_from(url);
        }
        set(&mut options.user, &self.nats_user);
        if self.nats_password.is_some() || self.nats_password_file.is_some() {
            options.password.clone_from(&self.nats_password);
            options.password_file.clone_from(&self.nats_password_file);
        }
        if self.nats_token.is_some() || self.nats_token_file.is_some() {
            options.token.clone_from(&self.nats_token);
            options.token_file.clone_from(&self.nats_token_file);
        }
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
