//! `baton-agent-sim --type <agent>`: the simulation agent, for tests, benchmarks and demos.
fn main() {
    baton_agents::cli::main("sim", || Ok(baton_agents::sim::Sim));
}
