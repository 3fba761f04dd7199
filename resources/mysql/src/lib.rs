//! The mysql resource for nebula-resource (in progress).
