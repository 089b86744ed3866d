"""The architecture search's parts: the supernet, progressive shrinking, the latency table and its timing
protocol, the loss table, the multi-budget selection, and the uniform BERT baselines."""
