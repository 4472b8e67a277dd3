"""The ramp bounded context: ramps, presigned transactions and the phase processor (schema `ramp`)."""
