"""Baseline models of the benchmark (Transformer, Mamba) behind ttt_infer.bench.models.BenchModel."""
