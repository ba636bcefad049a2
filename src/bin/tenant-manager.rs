//! The `tenant-manager` binary: tenants over Keycloak realms (default port 8091).

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    kaa::app::main_for(kaa::config::ServiceKind::TenantManager)
}
