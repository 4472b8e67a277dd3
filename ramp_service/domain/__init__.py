"""Pure ramp logic: corridors' flows and phases, the state machine, presigned-set rules. No I/O."""
