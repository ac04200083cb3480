"""A few decode steps of the CUDA decode kernels (TTT-MLP at both register budgets and TTT-Linear; both 16-bit
dtypes, ln parameters in fp32 and in the activation dtype, positions 0..17 so one mini-batch end is crossed), for
compute-sanitizer memcheck / racecheck: `compute-sanitizer --tool racecheck python scripts/sanitize_decode.py`."""

import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
from _decode_cases import make_case, step_inputs  # noqa: E402

from ttt_infer.kernels import decode  # noqa: E402
from ttt_infer.kernels.decode import cuda  # noqa: E402

assert cuda.available("mlp") and cuda.available("linear"), (
    "build the extension first: python -m ttt_infer.kernels.build"
)
for kind, cfg in (("mlp", "cu:8:2"), ("mlp", "cu:8:3"), ("linear", "cu:4:8")):
    os.environ["TTT_DECODE_CONFIG"] = f"{kind}={cfg}"
    for dtype in (torch.bfloat16, torch.float16):
        for ln_act in (False, True):
            st, ins = make_case(kind, B=1, nh=2, T=18, act_dtype=dtype, seed=int(cfg[-1]), device="cuda")
            st = type(st)(**{k: v.float() for k, v in st.tensors().items()})
            if ln_act:
                ins = ins[:4] + (ins[4].to(dtype), ins[5].to(dtype)) + ins[6:]
            pos = torch.zeros(1, dtype=torch.int64, device="cuda")
            for t in range(18):
                out = decode.ttt_decode_step(st, *step_inputs(ins, t), pos)
                pos += 1
            torch.cuda.synchronize()
            assert torch.isfinite(out).all()
print("sanitize run done")
