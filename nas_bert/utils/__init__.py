"""Small helpers for the entry points (Hydra resolvers, instantiation, run bookkeeping)."""
