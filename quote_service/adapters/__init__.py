"""The quote context's outside world: the pricing configuration file."""
