//! The redis resource for nebula-resource (in progress).
