//! redis throughput benchmark (in progress).

fn main() {}
