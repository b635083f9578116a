//! `baton dev --once` prints a timeline that agrees with itself: offsets are the
//! coordinator's event times from the job's creation, and a step's bracketed latency never
//! exceeds its offset minus its dispatch's offset.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::process::Command;

use common::BATON;

/// `+12 ms  text` → (12, text).
fn timeline_line(line: &str) -> Option<(u64, &str)> {
    let rest = line.trim_start().strip_prefix('+')?;
    let (ms, text) = rest.split_once(" ms")?;
    Some((ms.parse().ok()?, text.trim_start()))
}

/// The number of `[N ms` in `text`, the latency an outcome is printed with.
fn latency(text: &str) -> Option<u64> {
    let (_, rest) = text.split_once(" [")?;
    rest.split_once(" ms")?.0.parse().ok()
}

#[test]
fn the_demo_timeline_is_consistent_with_its_durations() {
    let output = Command::new(BATON)
        .args(["dev", "--once"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{output:?}");
    assert!(stdout.contains("ready after"), "{stdout}");

    let timeline: Vec<(u64, &str)> = stdout.lines().filter_map(timeline_line).collect();
    assert_eq!(
        timeline
            .first()
            .map(|(at, text)| (*at, text.starts_with("job created"))),
        Some((0, true)),
        "the timeline starts at the job's creation:\n{stdout}"
    );
    let mut dispatched = HashMap::new();
    let mut checked = 0;
    for (at, text) in &timeline {
        if let Some((step, rest)) = text.split_once(": dispatched attempt ") {
            let attempt = rest.split_whitespace().next().unwrap();
            dispatched.insert(format!("{step}: attempt {attempt}"), *at);
        }
        if let Some((attempt, _)) = text.split_once(" succeeded [") {
            let since = dispatched
                .get(attempt)
                .unwrap_or_else(|| panic!("{attempt:?} succeeded before its dispatch:\n{stdout}"));
            let latency = latency(text).unwrap();
            assert!(
                latency <= at - since,
                "{attempt:?} took {latency} ms but was printed {} ms after its dispatch:\n{stdout}",
                at - since
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 4, "four steps succeeded:\n{stdout}");

    let (ended, _) = timeline
        .iter()
        .find(|(_, text)| text.starts_with("job succeeded"))
        .expect("the job's end is printed");
    let answer = stdout
        .lines()
        .find(|l| l.starts_with("Answer ("))
        .expect("an answer line");
    assert!(
        answer.starts_with(&format!("Answer ({ended} ms from job created")),
        "the end-to-end time is the timeline's end: {answer}\n{stdout}"
    );
}
