//! Daemon tests (next).
