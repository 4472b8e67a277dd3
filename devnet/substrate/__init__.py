"""A Substrate JSON-RPC stand-in for Pendulum that the real substrate-interface client accepts."""
