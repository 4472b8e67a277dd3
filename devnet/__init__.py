"""Local stand-ins for Stellar Horizon, a Substrate node, the SEP-24 anchor and the PIX partner.

They speak the real protocols on loopback so the real SDKs and HTTP clients work against
them, and every one can be told to misbehave (see `devnet.faults`).
"""
