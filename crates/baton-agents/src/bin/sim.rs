//! `baton-agent-sim --type <agent>`: the simulation agent, for tests, benchmarks and demos.

// glibc's malloc spent about half of the coordinator's CPU under load (profiled with perf
// during `baton bench`); mimalloc handles the many small, short-lived buffers of message
// handling far better.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
fn main() {
    baton_agents::cli::main("sim", || Ok(baton_agents::sim::Sim));
}
