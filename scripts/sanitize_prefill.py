"""A small prefill run of both kernels (both dtypes, a start inside a mini-batch and a partial end),
for compute-sanitizer memcheck / racecheck: `compute-sanitizer --tool racecheck python scripts/sanitize_prefill.py`."""

import torch

from ttt_infer.kernels import prefill
from ttt_infer.ttt.cache import TTTState

prefill.check_available()
torch.manual_seed(0)
B, nh, F, MB = 1, 2, 64, 16
for kind in ("linear", "mlp"):
    hid = F if kind == "linear" else 4 * F
    for dtype in (torch.bfloat16, torch.float16):
        for start, T in ((0, 37), (5, 20)):
            xs = [torch.randn(B, nh, T, F, device="cuda").to(dtype) for _ in range(3)]
            lr = torch.rand(B, nh, T, device="cuda") / F
            tau = 1.0 / torch.arange(1, MB + 1, device="cuda", dtype=torch.float32)
            st = TTTState(
                W1=torch.randn(B, nh, F, hid, device="cuda") * 0.1,
                b1=torch.zeros(B, nh, hid, device="cuda"),
                k=torch.randn(B, nh, MB, F, device="cuda"),
                g1=torch.randn(B, nh, MB, hid, device="cuda") * 0.05,
                lr=torch.rand(B, nh, MB, device="cuda") / F,
            )
            if kind == "mlp":
                st.W2 = torch.randn(B, nh, hid, F, device="cuda") * 0.1
                st.b2 = torch.zeros(B, nh, F, device="cuda")
                st.x2 = torch.randn(B, nh, MB, hid, device="cuda")
                st.g2 = torch.randn(B, nh, MB, F, device="cuda") * 0.05
            for warps in (8, 16) if kind == "mlp" else (None,):
                s = st.clone()
                out = prefill.ttt_prefill(
                    s,
                    *xs,
                    lr,
                    torch.ones(nh, F, device="cuda"),
                    torch.zeros(nh, F, device="cuda"),
                    tau,
                    start,
                    mlp_warps=warps,
                )
                torch.cuda.synchronize()
                assert torch.isfinite(out.float()).all()
print("sanitize run done")
