//! The standing attack suite: each module is one attack on Coffer's trust boundary, tried as an
//! attacker would against a real server, a real anvil chain and both databases. Every test
//! asserts that the attack fails and that nothing was credited, signed, sent or leaked.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(dead_code, missing_docs)]

mod harness;
mod ssrf;
