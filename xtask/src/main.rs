//! xtask: the fkd command line.
fn main() {}
