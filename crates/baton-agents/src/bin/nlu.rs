//! `baton-agent-nlu`: intent and entities from a question.
fn main() {
    baton_agents::cli::main("nlu", || Ok(baton_agents::workers::Nlu));
}
