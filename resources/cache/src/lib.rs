//! The cache resource for nebula-resource (in progress).
