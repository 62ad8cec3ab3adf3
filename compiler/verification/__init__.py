"""Checking generated code against transformers and real checkpoints: the tiny-replica parity test,
reference logits, the compile-time checkpoint check (quantized layouts) and the example checkpoint."""
