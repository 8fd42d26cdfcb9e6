//! Known-bad implementations (stub).
