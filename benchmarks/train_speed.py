"""How fast can a U-Net train and predict on this machine's CPU? (planning figures for stage 2)

Prints, for a few input sizes and filter counts of MONAI's 2D U-Net: parameters,
seconds per training step (forward + backward + Adam step, batch 8), the implied
minutes per epoch over the training slices, and ms per slice for a forward pass
without gradients (batch 1), all on random data. Needs the training extras:
``pip install -e '.[train]'``.

    .venv/bin/python benchmarks/train_speed.py [--train-slices 253] [--threads 2]
"""

from __future__ import annotations

import argparse
import time

import torch
from monai.networks.nets import UNet

CONFIGS = [
    (128, (16, 32, 64, 128, 256)),
    (192, (16, 32, 64, 128, 256)),
    (256, (16, 32, 64, 128, 256)),
    (256, (32, 64, 128, 256, 512)),
]


def _timed(step, repeats: int) -> float:
    step()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        step()
    return (time.perf_counter() - start) / repeats


def measure(size: int, channels: tuple[int, ...], repeats: int) -> tuple[float, float, float]:
    """(parameters, seconds per training step at batch 8, seconds per slice for inference)."""
    model = UNet(2, 1, 2, channels=channels, strides=(2,) * (len(channels) - 1), num_res_units=2)
    optimiser = torch.optim.Adam(model.parameters(), 1e-3)
    batch = torch.rand(8, 1, size, size)
    target = torch.randint(0, 2, (8, size, size))

    def train_step() -> None:
        optimiser.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(batch), target)
        loss.backward()
        optimiser.step()

    step_s = _timed(train_step, repeats)
    model.eval()
    single = torch.rand(1, 1, size, size)
    with torch.no_grad():
        infer_s = _timed(lambda: model(single), repeats * 3)
    params = float(sum(p.numel() for p in model.parameters()))
    return params, step_s, infer_s


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--train-slices", type=int, default=253, help="slices per epoch (default 253)"
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, {args.threads} threads, batch 8 for training, 1 for inference"
    )
    print("size  filters               params  s/step  min/epoch  ms/slice(infer)")
    for size, channels in CONFIGS:
        params, step_s, infer_s = measure(size, channels, args.repeats)
        epoch_min = step_s * args.train_slices / 8 / 60
        print(
            f"{size:4d}  {channels!s:20s} {params / 1e6:6.2f}M  {step_s:6.2f}  "
            f"{epoch_min:9.2f}  {infer_s * 1000:15.1f}"
        )


if __name__ == "__main__":
    main()
