"""The ramp bounded context: ramps, presigned transactions, the phase processor (schema ramp)."""
