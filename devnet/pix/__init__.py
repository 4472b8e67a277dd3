"""A BRLA-like PIX partner: PIX deposits that, once paid, mint BRLA on the Pendulum devnet."""
