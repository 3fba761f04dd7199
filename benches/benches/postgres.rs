//! postgres throughput benchmark (in progress).

fn main() {}
