//! How to reach NATS: server URLs, one authentication method, TLS. Checked by
//! [`NatsOptions::validate`] before anything connects, and turned into async-nats
//! `ConnectOptions` by [`NatsOptions::client_options`].

use std::fmt;
use std::path::{Path, PathBuf};

use async_nats::ConnectOptions;
use serde::{Deserialize, Serialize};

use crate::secret::{Secret, redact_url, split_userinfo};

/// How to reach NATS. At most one authentication method may be given: `user` + `password`,
/// `token`, `nkey`, `creds`, or credentials in the URL (`nats://user:password@host`,
/// `nats://token@host`). `Debug` never shows a secret.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NatsOptions {
    /// Server URL(s), comma-separated, e.g. `nats://127.0.0.1:4222` (`tls://` requires TLS).
    pub url: String,
    /// Connection name shown in the server's monitoring.
    pub name: String,
    /// User name, with `password`.
    pub user: Option<String>,
    /// Password of `user`.
    pub password: Option<Secret>,
    /// File holding the password of `user` (instead of `password`), e.g. a mounted
    /// Kubernetes Secret; read at start, a trailing newline dropped.
    pub password_file: Option<PathBuf>,
    /// Authentication token.
    pub token: Option<Secret>,
    /// File holding the authentication token (instead of `token`); read at start, a
    /// trailing newline dropped.
    pub token_file: Option<PathBuf>,
    /// File holding an nkey seed (`SU…`); the server knows the public key.
    pub nkey: Option<PathBuf>,
    /// A `.creds` file (user JWT and nkey seed) for decentralised (operator/JWT) auth.
    pub creds: Option<PathBuf>,
    /// PEM file of the CA(s) that signed the server's certificate (turns TLS on).
    pub tls_ca: Option<PathBuf>,
    /// PEM client certificate for mutual TLS, with `tls_key`.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// Refuse to talk to a server without TLS.
    pub tls_required: bool,
    /// Prefix of this client's reply subjects (default `_INBOX`). Giving each user its own
    /// prefix lets the server's permissions keep one user from reading another's replies.
    pub inbox_prefix: Option<String>,
}

impl Default for NatsOptions {
    fn default() -> Self {
        Self {
            url: "nats://127.0.0.1:4222".to_owned(),
            name: "baton".to_owned(),
            user: None,
            password: None,
            password_file: None,
            token: None,
            token_file: None,
            nkey: None,
            creds: None,
            tls_ca: None,
            tls_cert: None,
            tls_key: None,
            tls_required: false,
            inbox_prefix: None,
        }
    }
}

impl fmt::Debug for NatsOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsOptions")
            .field("url", &redact_url(&self.url))
            .field("name", &self.name)
            .field("user", &self.user)
            .field("password", &self.password)
            .field("password_file", &self.password_file)
            .field("token", &self.token)
            .field("token_file", &self.token_file)
            .field("nkey", &self.nkey)
            .field("creds", &self.creds)
            .field("tls_ca", &self.tls_ca)
            .field("tls_cert", &self.tls_cert)
            .field("tls_key", &self.tls_key)
            .field("tls_required", &self.tls_required)
            .field("inbox_prefix", &self.inbox_prefix)
            .finish()
    }
}

/// The one authentication method in effect, with its secrets read.
enum Auth {
    None,
    UserPassword(String, String),
    Token(String),
    Nkey(String),
    Creds(String),
}

impl NatsOptions {
    /// The URL(s) fit for logs and error messages (passwords and tokens redacted).
    pub fn redacted_url(&self) -> String {
        redact_url(&self.url)
    }

    /// Checks the options before anything connects: URL schemes, at most one authentication
    /// method, TLS certificate and key together, and that every file named can be read and
    /// holds what it should. The message names the offending setting, never a secret.
    pub fn validate(&self) -> Result<(), String> {
        self.prepare().map(|_| ())
    }

    /// async-nats options carrying the name, authentication and TLS settings, and the server
    /// list with any credentials taken out of the URLs (async-nats logs server addresses at
    /// debug level, so credentials must not stay in them).
    pub fn client_options(&self) -> Result<(ConnectOptions, String), String> {
        let (auth, urls) = self.prepare()?;
        let mut options = ConnectOptions::new().name(&self.name);
        options = match auth {
            Auth::None => options,
            Auth::UserPassword(user, password) => options.user_and_password(user, password),
            Auth::Token(token) => options.token(token),
            Auth::Nkey(seed) => options.nkey(seed),
            Auth::Creds(creds) => options
                .credentials(&creds)
                .map_err(|e| format!("invalid NATS credentials file: {e}"))?,
        };
        if let Some(ca) = &self.tls_ca {
            options = options.add_root_certificates(ca.clone());
        }
        if let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) {
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
        let tls = self.tls_required
            || self.tls_ca.is_some()
            || self.tls_cert.is_some()
            || urls.split(',').any(|u| u.trim().starts_with("tls://"));
        if tls {
            options = options.require_tls(true);
        }
        if let Some(prefix) = &self.inbox_prefix {
            options = options.custom_inbox_prefix(prefix);
        }
        Ok((options, urls))
    }

    fn prepare(&self) -> Result<(Auth, String), String> {
        if self.url.trim().is_empty() {
            return Err("NATS URL is empty".into());
        }
        let mut from_url: Option<(Option<String>, String)> = None;
        let mut stripped = Vec::new();
        for url in self.url.split(',') {
            let url = url.trim();
            let scheme_ok = ["nats://", "tls://", "ws://", "wss://"]
                .iter()
                .any(|s| url.starts_with(s))
                || !url.contains("://");
            if !scheme_ok {
                return Err(format!(
                    "NATS URL {:?} must start with nats://, tls://, ws:// or wss://",
                    redact_url(url)
                ));
            }
            let (user, password, rest) = split_userinfo(url);
            if let Some(password) = password {
                let found = (user.map(str::to_owned), password.to_owned());
                if from_url.as_ref().is_some_and(|seen| *seen != found) {
                    return Err("the NATS URLs carry different credentials".into());
                }
                from_url = Some(found);
            }
            stripped.push(rest);
        }
        let password = secret_or_file(
            "password",
            self.password.as_ref(),
            self.password_file.as_deref(),
            "NATS password file",
        )?;
        let token = secret_or_file(
            "token",
            self.token.as_ref(),
            self.token_file.as_deref(),
            "NATS token file",
        )?;
        let mut methods = Vec::new();
        if from_url.is_some() {
            methods.push("credentials in the URL");
        }
        if self.user.is_some() || password.is_some() {
            methods.push("user/password");
        }
        if token.is_some() {
            methods.push("token");
        }
        if self.nkey.is_some() {
            methods.push("nkey");
        }
        if self.creds.is_some() {
            methods.push("credentials file");
        }
        if methods.len() > 1 {
            return Err(format!(
                "give one NATS authentication method, not {}",
                methods.join(" and ")
            ));
        }
        check_tls_files(
            "NATS",
            self.tls_ca.as_deref(),
            self.tls_cert.as_deref(),
            self.tls_key.as_deref(),
        )?;
        if let Some(prefix) = &self.inbox_prefix
            && (prefix.is_empty()
                || prefix.contains(['*', '>', ' ', '\t'])
                || prefix.starts_with('.')
                || prefix.ends_with('.'))
        {
            return Err(format!(
                "NATS inbox prefix {prefix:?} is not a subject prefix"
            ));
        }
        let auth = match (&self.user, &password) {
            (Some(user), Some(password)) => {
                Auth::UserPassword(user.clone(), password.expose().to_owned())
            }
            (Some(_), None) => return Err("a NATS user needs a password".into()),
            (None, Some(_)) => return Err("a NATS password needs a user".into()),
            (None, None) => {
                if let Some(token) = &token {
                    Auth::Token(token.expose().to_owned())
                } else if let Some(path) = &self.nkey {
                    let seed = read("NATS nkey seed file", path)?.trim().to_owned();
                    nkeys::KeyPair::from_seed(&seed)
                        .map_err(|_| format!("{} does not hold an nkey seed", path.display()))?;
                    Auth::Nkey(seed)
                } else if let Some(path) = &self.creds {
                    let creds = read("NATS credentials file", path)?;
                    // Parsed here so a bad file is a configuration error, not a failed connect.
                    ConnectOptions::new()
                        .credentials(&creds)
                        .map_err(|_| format!("{} is not a NATS .creds file", path.display()))?;
                    Auth::Creds(creds)
                } else {
                    match from_url {
                        Some((Some(user), password)) => Auth::UserPassword(user, password),
                        Some((None, token)) => Auth::Token(token),
                        None => Auth::None,
                    }
                }
            }
        };
        Ok((auth, stripped.join(",")))
    }
}

/// Checks a client's TLS files for `service` ("NATS", "Redis"): a client certificate comes
/// with its key, and every file named can be read.
pub fn check_tls_files(
    service: &str,
    ca: Option<&Path>,
    cert: Option<&Path>,
    key: Option<&Path>,
) -> Result<(), String> {
    if cert.is_some() != key.is_some() {
        return Err(format!(
            "the {service} TLS client certificate and key must be given together"
        ));
    }
    for (what, path) in [("CA file", ca), ("certificate", cert), ("key", key)] {
        if let Some(path) = path {
            read(&format!("{service} TLS {what}"), path)?;
        }
    }
    Ok(())
}

/// A secret given as a value or as a file, not both; the file is read now.
fn secret_or_file(
    name: &str,
    value: Option<&Secret>,
    file: Option<&Path>,
    what: &str,
) -> Result<Option<Secret>, String> {
    match (value, file) {
        (Some(_), Some(_)) => Err(format!(
            "give the NATS {name} or a file holding it, not both"
        )),
        (Some(value), None) => Ok(Some(value.clone())),
        (None, Some(path)) => crate::read_secret_file(what, path).map(Some),
        (None, None) => Ok(None),
    }
}

fn read(what: &str, path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("cannot read {what} {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(f: impl FnOnce(&mut NatsOptions)) -> NatsOptions {
        let mut options = NatsOptions::default();
        f(&mut options);
        options
    }

    #[test]
    fn debug_redacts_every_secret() {
        let options = with(|o| {
            o.url = "nats://u:urlsecret@h:1".into();
            o.password = Some(Secret::new("passsecret"));
            o.token = Some(Secret::new("tokensecret"));
        });
        let printed = format!("{options:?}");
        assert!(!printed.contains("secret\""), "{printed}");
        assert!(!printed.contains("urlsecret"), "{printed}");
        assert!(!printed.contains("passsecret") && !printed.contains("tokensecret"));
    }

    #[test]
    fn one_authentication_method_at_most() {
        let both = with(|o| {
            o.user = Some("u".into());
            o.password = Some(Secret::new("p"));
            o.token = Some(Secret::new("t"));
        });
        let error = both.validate().unwrap_err();
        assert!(error.contains("user/password and token"), "{error}");
        let url_and_token = with(|o| {
            o.url = "nats://a:b@h".into();
            o.token = Some(Secret::new("t"));
        });
        assert!(url_and_token.validate().is_err());
        let half = with(|o| o.user = Some("u".into()));
        assert!(half.validate().unwrap_err().contains("needs a password"));
    }

    #[test]
    fn credentials_leave_the_url() {
        let options = with(|o| o.url = "nats://u:p@h:1,nats://u:p@g:2".into());
        let (_, urls) = options.client_options().unwrap();
        assert_eq!(urls, "nats://h:1,nats://g:2");
        let different = with(|o| o.url = "nats://u:p@h:1,nats://u:q@g:2".into());
        assert!(different.validate().is_err());
    }

    #[test]
    fn tls_files_must_be_complete_and_readable() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("cert.pem");
        std::fs::write(&cert, "x").unwrap();
        let lone = with(|o| o.tls_cert = Some(cert.clone()));
        assert!(lone.validate().unwrap_err().contains("together"));
        let missing = with(|o| o.tls_ca = Some(dir.path().join("nope.pem")));
        let error = missing.validate().unwrap_err();
        assert!(error.contains("cannot read NATS TLS CA file"), "{error}");
    }

    #[test]
    fn passwords_and_tokens_come_from_files_without_their_newline() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("password");
        std::fs::write(&file, "s3cret\n").unwrap();
        let options = with(|o| {
            o.user = Some("u".into());
            o.password_file = Some(file.clone());
        });
        let (auth, _) = options.prepare().unwrap();
        assert!(matches!(auth, Auth::UserPassword(u, p) if u == "u" && p == "s3cret"));
        let options = with(|o| o.token_file = Some(file.clone()));
        let (auth, _) = options.prepare().unwrap();
        assert!(matches!(auth, Auth::Token(t) if t == "s3cret"));
        let both = with(|o| {
            o.token = Some(Secret::new("t"));
            o.token_file = Some(file.clone());
        });
        assert!(both.validate().unwrap_err().contains("not both"));
        let missing = dir.path().join("nope");
        let error = with(|o| o.token_file = Some(missing.clone()))
            .validate()
            .unwrap_err();
        assert!(error.contains(&missing.display().to_string()), "{error}");
        assert!(error.contains("NATS token file"), "{error}");
    }

    #[test]
    fn seed_and_creds_files_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("bad");
        std::fs::write(&bad, "not a seed").unwrap();
        let nkey = with(|o| o.nkey = Some(bad.clone()));
        assert!(nkey.validate().unwrap_err().contains("nkey seed"));
        let creds = with(|o| o.creds = Some(bad.clone()));
        assert!(creds.validate().unwrap_err().contains(".creds"));
        let seed = nkeys::KeyPair::new_user().seed().unwrap();
        let good = dir.path().join("good");
        std::fs::write(&good, format!("{seed}\n")).unwrap();
        assert_eq!(with(|o| o.nkey = Some(good)).validate(), Ok(()));
    }
}
