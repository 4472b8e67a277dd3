"""The quote bounded context: prices ramps and hands out single-use quotes (schema `quote`)."""
