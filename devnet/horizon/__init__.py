"""A Horizon-compatible Stellar stand-in: a ledger with Stellar's checks behind Horizon's API."""
