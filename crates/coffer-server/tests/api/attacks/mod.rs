//! The standing attack suite: each module is one attack on Coffer's trust boundary, tried as an
//! attacker would against a real server, a real anvil chain and both databases. Every test
//! asserts that the attack fails and that nothing was credited, signed, sent or leaked.

mod double_payment;
mod extreme_timestamps;
mod forged_settle;
mod free_confirmation;
mod gas_drain;
mod gatepay_credential;
mod gatepay_refunds;
mod http_limits;
mod lost_customers;
mod one_payment_two_purchases;
mod page_headers;
mod page_links;
mod paywall_paths;
mod pelago_holes;
mod sale_reorg;
mod secrets;
mod ssrf;
