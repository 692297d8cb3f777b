//! netd's build-dependency on protoc-bin-vendored puts that crate in the build graph, so cargo
//! unpacks it before any build script runs; etcd-client's build then runs its protoc through
//! `scripts/protoc` (PROTOC in `.cargo/config.toml`). This script only checks that the crate has a
//! protoc for this host and says what to do when it has none.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var_os("PROTOC").is_none() {
        println!("cargo:warning=PROTOC is not set: build from the workspace (its .cargo/config.toml sets it) or set it to a protoc");
    }
    if let Err(e) = protoc_bin_vendored::protoc_bin_path() {
        println!("cargo:warning=no vendored protoc for this host ({e}); set PROTOC to a protoc of your own");
    }
}
