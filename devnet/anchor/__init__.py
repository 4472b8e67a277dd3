"""A SEP-24-like anchor that pays out fiat when its Stellar account receives a memo payment."""
