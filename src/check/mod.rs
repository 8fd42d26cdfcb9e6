//! The harness (stub; being written).
