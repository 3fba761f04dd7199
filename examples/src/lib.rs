//! Runnable examples for nebula-resource; see `examples/`.
