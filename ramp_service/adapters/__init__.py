"""The ramp context's outside world: the quote service client and the registration chains."""
