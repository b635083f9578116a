//! `baton`: see `baton --help`.
fn main() {
    std::process::exit(baton_cli::main());
}
