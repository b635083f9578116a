//! `baton-agent-sql`: SQL for the intent, run on the bundled SQLite database.
fn main() {
    baton_agents::cli::main("sql", || Ok(baton_agents::workers::Sql::new()?));
}
