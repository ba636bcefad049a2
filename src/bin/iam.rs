//! The `iam` binary: Identity and Access Management (default port 8090).

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    kaa::app::main_for(kaa::config::ServiceKind::Iam)
}
