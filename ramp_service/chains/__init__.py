"""Adapters to the chains and fiat partners, behind small interfaces the engine uses.

The engine imports these modules, never a chain SDK directly.
"""
