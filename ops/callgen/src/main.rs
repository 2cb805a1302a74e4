//! # bgf-callgen (skeleton; arrives with issue 4)
fn main() {}
