//! The scheduler's integration tests: slots fired once across replicas, catch-up, the
//! binary itself and its health command.

mod firing;
mod health;
mod run;
