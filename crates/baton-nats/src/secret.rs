//! Secrets in configuration: a string that never shows in `Debug` output, and URL redaction
//! for the connection strings Baton logs and puts in error messages. Every Baton process
//! depends on this crate, so the coordinator's Redis settings use them too.

use std::fmt;

use serde::{Deserialize, Serialize};

/// What a secret prints as.
pub const REDACTED: &str = "[redacted]";

/// A password, token or other secret. `Debug` and `Display` print [`REDACTED`]; the value is
/// only reachable through [`Secret::expose`], so it cannot end up in a log line by accident.
#[derive(Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for handing to a client library.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}

/// Reads a secret from a file (a mounted Kubernetes or Docker secret, `*_FILE` variables):
/// the whole file, less one trailing newline (`\n` or `\r\n`), which editors and `echo`
/// add. The error names `what` and the file, never its content.
pub fn read_secret_file(what: &str, path: &std::path::Path) -> Result<Secret, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {what} {}: {e}", path.display()))?;
    let value = text
        .strip_suffix('\n')
        .map(|rest| rest.strip_suffix('\r').unwrap_or(rest))
        .unwrap_or(&text);
    Ok(Secret::new(value))
}

/// The user part of a URL's `user:password@` (or `token@`), split off: `(user, password,
/// the URL without them)`. A lone `token@` comes back as the password with no user.
pub(crate) fn split_userinfo(url: &str) -> (Option<&str>, Option<&str>, String) {
    let Some((scheme, rest)) = url.split_once("://") else {
        return (None, None, url.to_owned());
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return (None, None, url.to_owned());
    };
    let userinfo = &rest[..at];
    let stripped = format!("{scheme}://{}", &rest[at + 1..]);
    match userinfo.split_once(':') {
        Some((user, password)) => (Some(user), Some(password), stripped),
        None => (None, Some(userinfo), stripped),
    }
}

/// A URL (or comma-separated list of URLs) fit for logs: any password or token in its
/// `user:password@` part is replaced by [`REDACTED`]; the user name stays.
pub fn redact_url(urls: &str) -> String {
    urls.split(',')
        .map(|url| {
            let (user, password, stripped) = split_userinfo(url);
            if password.is_none() {
                return url.to_owned();
            }
            let Some((scheme, rest)) = stripped.split_once("://") else {
                return url.to_owned();
            };
            match user {
                Some(user) => format!("{scheme}://{user}:{REDACTED}@{rest}"),
                None => format!("{scheme}://{REDACTED}@{rest}"),
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let secret = Secret::new("hunter2");
        assert_eq!(format!("{secret:?} {secret}"), "[redacted] [redacted]");
        assert_eq!(secret.expose(), "hunter2");
    }

    #[test]
    fn urls_lose_their_passwords_and_tokens() {
        assert_eq!(
            redact_url("nats://alice:s3cret@host:4222"),
            "nats://alice:[redacted]@host:4222"
        );
        assert_eq!(
            redact_url("nats://tok3n@a:1, tls://b:2"),
            "nats://[redacted]@a:1, tls://b:2"
        );
        assert_eq!(
            redact_url("rediss://baton:p@ss@redis:6380/0"),
            "rediss://baton:[redacted]@redis:6380/0"
        );
        assert_eq!(redact_url("redis://host/0?x=a@b"), "redis://host/0?x=a@b");
        assert_eq!(redact_url("127.0.0.1:4222"), "127.0.0.1:4222");
    }

    #[test]
    fn secret_files_lose_one_trailing_newline() {
        let dir = tempfile::tempdir().unwrap();
        for (content, want) in [("p\n", "p"), ("p\r\n", "p"), ("p", "p"), ("p \n\n", "p \n")] {
            let path = dir.path().join("s");
            std::fs::write(&path, content).unwrap();
            assert_eq!(read_secret_file("x", &path).unwrap().expose(), want);
        }
        let error = read_secret_file("Redis password file", &dir.path().join("none")).unwrap_err();
        assert!(
            error.starts_with("cannot read Redis password file "),
            "{error}"
        );
        assert!(error.contains("none"), "{error}");
    }

    #[test]
    fn userinfo_splits_off() {
        let (user, password, rest) = split_userinfo("nats://u:p@h:1");
        assert_eq!(
            (user, password, rest.as_str()),
            (Some("u"), Some("p"), "nats://h:1")
        );
        let (user, password, rest) = split_userinfo("nats://t@h");
        assert_eq!(
            (user, password, rest.as_str()),
            (None, Some("t"), "nats://h")
        );
    }
}
