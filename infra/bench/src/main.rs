//! `make bench`: measures deltacast and writes `target/bench/summary.json`.

mod startup;

fn main() {}
