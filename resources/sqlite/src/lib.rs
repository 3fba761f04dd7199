//! The sqlite resource for nebula-resource (in progress).
