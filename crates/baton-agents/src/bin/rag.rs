//! `baton-agent-rag`: BM25 retrieval over the bundled documents.
fn main() {
    baton_agents::cli::main("rag", || Ok(baton_agents::workers::Rag::new()));
}
