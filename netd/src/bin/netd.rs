//! `netd`: the node agent (`netd agent`) and its Docker-like client.

fn main() {
    std::process::exit(shoal_netd::cli::main());
}
