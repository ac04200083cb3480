#!/usr/bin/env bash
# Partial CUDA 12.5 check of the prefill kernels and the CUDA decode kernels (no full nvcc 12.5 is reachable): nvcc 13 emits PTX
# for sm_90a and sm_80, `.version` is lowered to 8.5 (what CUDA 12.5 reads), and ptxas 12.5 from
# PyPI's nvidia-cuda-nvcc-cu12==12.5.* wheel assembles it. It does NOT check that nvcc 12.5's
# front end accepts the C++ (-std=c++20, ThunderKittens headers).
# Usage: scripts/check_ptxas125.sh /path/to/ptxas-12.5
set -euo pipefail
PTXAS=${1:?path to ptxas 12.5}
TK=$(python3 -c "from ttt_infer.env import tk_root; print(tk_root())")/include
tmp=$(mktemp -d)
"$PTXAS" --version | tail -1
for f in ttt_linear_prefill ttt_mlp_prefill ttt_linear_prefill_wgmma ttt_mlp_decode ttt_linear_decode; do
  for a in 90a 80; do
    nvcc -std=c++20 -O3 --expt-relaxed-constexpr -I "$TK" -gencode=arch=compute_$a,code=compute_$a -ptx csrc/$f.cu -o "$tmp/$f.$a.ptx"
    sed -i 's/^\.version .*/.version 8.5/' "$tmp/$f.$a.ptx"
    "$PTXAS" -arch=sm_$a -v "$tmp/$f.$a.ptx" -o "$tmp/$f.$a.cubin" 2>&1 | grep -E "Used|spill" | sort | uniq -c
    echo "$f sm_$a: ptxas 12.5 OK ($(stat -c %s "$tmp/$f.$a.cubin") B cubin)"
  done
done
rm -rf "$tmp"
