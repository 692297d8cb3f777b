//! Compose files turned into specs (being written).
