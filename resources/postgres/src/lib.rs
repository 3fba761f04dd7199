//! The postgres resource for nebula-resource (in progress).
