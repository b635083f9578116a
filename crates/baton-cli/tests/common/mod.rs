//! What the `baton` binary's tests share: running it against a fleet.

// Each test crate uses a part of it.
#![allow(clippy::unwrap_used, dead_code)]

use std::process::{Command, Output};

use baton_tests::Fleet;

pub(crate) const BATON: &str = env!("CARGO_BIN_EXE_baton");

/// Runs `baton --nats-url <fleet> <args>` to the end.
pub(crate) async fn baton(fleet: &Fleet, args: &[&str]) -> Output {
    let url = fleet.nats.url();
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        Command::new(BATON)
            .arg("--nats-url")
            .arg(url)
            .args(args)
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

pub(crate) fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}
