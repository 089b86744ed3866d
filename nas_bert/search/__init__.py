"""Stage 2: progressive shrinking, latency and loss lookup tables, multi-budget model selection."""
