//! The workspace-hack package (cargo-hakari): it depends on every third-party crate the
//! workspace uses, with the union of the features the workspace build enables, so that a
//! build of one package (`cargo build -p X`, `cargo test -p X`) resolves the same features as
//! `cargo build --workspace` and reuses its compiled dependencies. Regenerate it with
//! `cargo hakari generate` after changing dependencies; `make test` fails when it is stale.
