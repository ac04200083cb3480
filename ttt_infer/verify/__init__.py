"""Parity verification (`ttt-infer verify`): kernels vs the PyTorch reference vs float64.

metrics.py  per-time-step distances between output distributions
run.py      the runs (prefill, teacher-forced decode, prefill->decode chain, CUDA-graph replay), checks, CLI
figures.py  the seed's four figures and a combined PNG
"""
