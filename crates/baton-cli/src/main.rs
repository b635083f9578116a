//! `baton`: see `baton --help`.

// glibc's malloc spent about half of the coordinator's CPU under load (profiled with perf
// during `baton bench`); mimalloc handles the many small, short-lived buffers of message
// handling far better.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
fn main() {
    std::process::exit(baton_cli::main());
}
