//! MongoDB tests (next).
