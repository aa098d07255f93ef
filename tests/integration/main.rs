//! The integration tests: the real `cofre` binary against real files, real
//! `age` and GNU `tar`, and a real MongoDB-protocol server (started by
//! `scripts/test`; its address comes in `COFRE_TEST_MONGODB_URI`).

#[macro_use]
mod harness;

mod bad_input;
mod daemon;
mod differential;
mod drill;
mod hostile;
mod interop;
mod mongo;
mod mongo_tools;
mod monitor;
mod offsite;
mod pitr;
mod property;
mod restore;
mod round_trip;
mod secrets;
mod troubleshooting;
mod trust;
