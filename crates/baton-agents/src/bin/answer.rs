//! `baton-agent-answer`: composes the reply from the other agents' outputs.
fn main() {
    baton_agents::cli::main("answer", || Ok(baton_agents::workers::Answer));
}
