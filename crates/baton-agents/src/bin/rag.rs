//! `baton-agent-rag`: BM25 retrieval over the bundled documents.

// glibc's malloc spent about half of the coordinator's CPU under load (profiled with perf
// during `baton bench`); mimalloc handles the many small, short-lived buffers of message
// handling far better.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
fn main() {
    baton_agents::cli::main("rag", || Ok(baton_agents::workers::Rag::new()));
}
