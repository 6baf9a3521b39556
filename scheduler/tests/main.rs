//! The scheduler's integration tests: slots fired once across replicas, catch-up, and the
//! binary itself.

mod firing;
mod run;
