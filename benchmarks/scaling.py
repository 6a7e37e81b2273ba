"""How `lungseg predict` scales with the length of a scan: time, peak memory, bytes per voxel.

Writes 512 x 512 NIfTI scans of 64, 256 and 512 slices (the real 64-slice DICOM
series of ../shared/data repeated; synthetic CT where it is absent), runs
`lungseg predict SCAN --out ... --quiet` on each in a fresh process, lungs only and
with infection, and prints one line each: seconds, the process's peak resident
memory, that peak per voxel of the input, and the growth per voxel over the
smallest scan (the memory the scan's length costs, the fixed overhead taken out).

    .venv/bin/python benchmarks/scaling.py [--slices 64 256 512]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT / "tests"))

from lungseg.imaging import read_image  # noqa: E402

MEASURE = """
import resource, subprocess, sys, time
started = time.perf_counter()
code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode
seconds = time.perf_counter() - started
print(code, seconds, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


def _planes() -> np.ndarray:
    series = DATA / "chest-ct-dicom" / "Lung_Dx-A0001"
    if series.is_dir():
        return read_image(series).array
    from synthetic import ct_volume

    return np.repeat(ct_volume(slices=16, size=64, lung_free=2)[0], 8, axis=1).repeat(8, 2)


def _scan(planes: np.ndarray, slices: int, folder: Path) -> Path:
    repeats = -(-slices // planes.shape[0])
    volume = np.concatenate([planes] * repeats)[:slices]
    path = folder / f"scan_{slices}.nii.gz"
    affine = np.diag([-0.8, -0.8, 1.0, 1.0])
    data = np.ascontiguousarray(np.transpose(volume, (2, 1, 0)))
    nib.save(nib.Nifti1Image(data, affine), path)
    return path


def _run(scan: Path, out: Path, infection: bool) -> tuple[float, float]:
    """Seconds and peak resident MB of one `lungseg predict` process."""
    command = [sys.executable, "-m", "lungseg", "predict", str(scan), "--out", str(out), "--quiet"]
    if not infection:
        command.append("--no-infection")
    printed = subprocess.run(
        [sys.executable, "-c", MEASURE, *command], capture_output=True, text=True, check=True
    ).stdout.split()
    code, seconds, peak_kb = int(printed[0]), float(printed[1]), float(printed[2])
    if code != 0:
        raise SystemExit(f"lungseg predict failed on {scan} (exit {code})")
    return seconds, peak_kb / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--slices", type=int, nargs="+", default=[64, 256, 512])
    args = parser.parse_args()
    planes = _planes()
    print(
        f"{'slices':>6} {'mode':<16} {'seconds':>8} {'ms/slice':>8} {'peak MB':>8} "
        f"{'B/voxel':>8} {'B/voxel over first':>19}"
    )
    with tempfile.TemporaryDirectory(prefix="lungseg-scaling-") as scratch:
        folder = Path(scratch)
        first: dict[bool, tuple[int, float]] = {}
        for slices in sorted(args.slices):
            scan = _scan(planes, slices, folder)
            voxels = slices * planes.shape[1] * planes.shape[2]
            for infection in (False, True):
                seconds, peak_mb = _run(scan, folder / "out", infection)
                per_voxel = peak_mb * 1024**2 / voxels
                base = first.setdefault(infection, (voxels, peak_mb))
                growth = (
                    (peak_mb - base[1]) * 1024**2 / (voxels - base[0]) if voxels > base[0] else None
                )
                mode = "lungs + infection" if infection else "lungs"
                print(
                    f"{slices:>6} {mode:<16} {seconds:>8.1f} {1000 * seconds / slices:>8.1f} "
                    f"{peak_mb:>8.0f} {per_voxel:>8.1f} "
                    f"{'' if growth is None else f'{growth:.1f}':>19}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
