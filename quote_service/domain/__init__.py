"""Pure quote logic: corridors, pricing and the quote lifecycle. No I/O."""
