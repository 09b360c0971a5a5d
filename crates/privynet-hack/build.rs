//! Present so that cargo treats the build dependencies listed in Cargo.toml as such
//! (cargo-hakari needs a build script to unify build-dependency features).
fn main() {}
