//! `registryctl`: command-line client of the agent registry (issue 5).

fn main() {}
