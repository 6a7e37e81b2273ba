"""The work around the network, as a ratio to the network's own time, measured in one run.

Prints, on this machine and in this run:
  * `lungseg predict` over a list of 512 x 512 slices as people save them (DICOM files
    of the real series, PNG and JPEG renderings of finding-lungs slices), infection
    on, start-up excluded (``inference.batch.run_batch``, as the CLI runs a list),
    against the bare onnxruntime time of the shipped network for as many slices (one
    at a time, as predict calls it);
  * the 64-slice DICOM series read, segmented and written (NIfTI, DICOM-SEG, montage)
    against the network's time for its 64 slices (in the product's batches);
  * a slice through the web API (upload to the JSON answer with the overlay, a real
    `lungseg serve` on a free port; each of the DICOM files in turn, one at a time)
    against the network's time for the same slices;
  * where a slice's milliseconds go (``--breakdown``): each step of predict and of
    writing, timed one slice at a time.

Each time is the best of ``--repeats`` passes (the network's too), so that another
process's burst counts against neither side. Needs ../shared/data.

    .venv/bin/python benchmarks/overhead.py [--slices 16] [--repeats 3] [--breakdown]
"""

from __future__ import annotations

import argparse
import http.client
import importlib
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image

from lungseg.core.memory import keep_freed_memory
from lungseg.imaging import read_image, to_display
from lungseg.inference import Predictor
from lungseg.inference import batch as batch_module
from lungseg.inference import model as model_module
from lungseg.inference.batch import BatchSettings, run_batch
from lungseg.inference.encode import write_prediction
from lungseg.inference.model import SegmentationModel

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SERIES = DATA / "chest-ct-dicom" / "Lung_Dx-A0001"


def slices_as_saved(folder: Path, count: int) -> list[Path]:
    """``count`` each of DICOM files (the real series' middle slices), and PNG and JPEG
    renderings (lung window, 8-bit) of finding-lungs slices: 512 x 512 all."""
    folder.mkdir(parents=True, exist_ok=True)
    dicoms = sorted(SERIES.glob("*.dcm"))
    middle = len(dicoms) // 2 - count // 2
    paths = []
    for source in dicoms[middle : middle + count]:
        paths.append(Path(shutil.copy(source, folder / f"series_{source.name}")))
    tiffs = sorted((DATA / "finding-lungs-ct" / "2d_images").glob("*.tif"))
    for index, source in enumerate(tiffs[: 2 * count]):
        image = read_image(source)
        picture = Image.fromarray(to_display(image.array, image.intensity))
        path = folder / f"{source.stem}.{'png' if index % 2 else 'jpg'}"
        picture.save(path, quality=92) if path.suffix == ".jpg" else picture.save(path)
        paths.append(path)
    return paths


def best_ms(work: Callable[[], object], repeats: int) -> float:
    """The fastest of ``repeats`` runs of ``work``, in ms."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        times.append((time.perf_counter() - started) * 1000.0)
    return min(times)


def model_inputs(model: SegmentationModel, paths: list[Path] | Path) -> np.ndarray:
    """The network's inputs ``(n, size, size)`` of the slices of ``paths`` (a series folder,
    or slice files), prepared outside any timing."""
    images = [read_image(paths)] if isinstance(paths, Path) else [read_image(p) for p in paths]
    planes = [plane for image in images for plane in image.slices()]
    kinds = [image.intensity for image in images for _ in image.slices()]
    return model.prepare(planes, kinds)[0]


def network_one_at_a_time(model: SegmentationModel, squares: np.ndarray) -> None:
    for square in squares:
        model.run(square[np.newaxis], batch_size=1)


def list_through_predict(predictor: Predictor, paths: list[Path], out: Path) -> None:
    outcomes = list(run_batch(BatchSettings(out=out), paths, predictor=predictor))
    failed = [o.error for o in outcomes if o.error is not None]
    if failed:
        raise SystemExit(f"predict failed: {failed[0]}")


def series_through_predict(predictor: Predictor, out: Path) -> None:
    write_prediction(predictor.predict(SERIES), out, "series")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def server() -> Iterator[int]:
    """A real `lungseg serve` (defaults: one worker, the shipped network) on a free port."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "lungseg", "serve", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                connection.request("GET", "/healthz")
                if connection.getresponse().status == 200:
                    break
            except OSError:
                time.sleep(0.2)
        else:
            raise SystemExit("the server did not start")
        yield port
    finally:
        process.kill()
        process.wait()


def post_slice(port: int, path: Path) -> None:
    """One slice to ``/api/v1/segment`` (the JSON answer, the overlay in it)."""
    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{path.name}"'
            "\r\nContent-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + path.read_bytes()
        + f"\r\n--{boundary}--\r\n".encode()
    )
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        connection.request(
            "POST",
            "/api/v1/segment",
            body,
            {"Content-Type": f"multipart/form-data; boundary={boundary}"},
        )
        response = connection.getresponse()
        answer = response.read()
        if response.status != 200 or b'"overlay_png"' not in answer:
            raise SystemExit(f"the API answered {response.status}: {answer[:200]!r}")
    finally:
        connection.close()


STEPS = (  # (module, function): the steps of one slice, in the order they run
    ("lungseg.inference.predictor", "read_image"),
    ("lungseg.inference.predictor", "refusal_before_segmenting"),
    ("lungseg.inference.model", "SegmentationModel.prepare"),
    ("lungseg.inference.model", "SegmentationModel.run"),
    ("lungseg.inference.model", "decision_at_slice_size"),
    ("lungseg.inference.model", "body_for"),
    ("lungseg.inference.model", "clean_lung_labels"),
    ("lungseg.inference.predictor", "lung_measures"),
    ("lungseg.inference.predictor", "restrict_to_lung"),
    ("lungseg.inference.predictor", "joint_counts"),
    ("lungseg.inference.predictor", "check_prediction"),
    ("lungseg.inference.encode", "overlay_picture"),
    ("lungseg.inference.encode", "annotate"),
    ("lungseg.inference.encode", "lung_png"),
    ("lungseg.inference.encode", "infection_png"),
    ("lungseg.inference.encode", "png_bytes"),
    ("lungseg.inference.encode", "_write_atomically"),
)


@contextmanager
def stopwatch() -> Iterator[dict[str, float]]:
    """Each of ``STEPS`` timed where it is called from (s, summed) while inside."""
    spent: dict[str, float] = defaultdict(float)
    saved = []
    for module_name, name in STEPS:
        owner: object = importlib.import_module(module_name)
        attribute = name
        if "." in name:
            class_name, attribute = name.split(".")
            owner = getattr(owner, class_name)
        original = getattr(owner, attribute)

        def timed(
            *args: object,
            _original: Callable[..., object] = original,
            _name: str = name,
            **kwargs: object,
        ) -> object:
            started = time.perf_counter()
            try:
                return _original(*args, **kwargs)
            finally:
                spent[_name] += time.perf_counter() - started

        saved.append((owner, attribute, original))
        setattr(owner, attribute, timed)
    try:
        yield spent
    finally:
        for owner, attribute, original in saved:
            setattr(owner, attribute, original)


def breakdown(predictor: Predictor, paths: list[Path], out: Path) -> None:
    """ms per slice of each step, one slice at a time (no lanes), by kind of file."""
    kinds = {
        "DICOM": [p for p in paths if p.suffix == ".dcm"],
        "PNG": [p for p in paths if p.suffix == ".png"],
        "JPEG": [p for p in paths if p.suffix == ".jpg"],
    }
    table: dict[str, dict[str, float]] = {}
    totals: dict[str, float] = {}
    for kind, chosen in kinds.items():
        with stopwatch() as spent:
            started = time.perf_counter()
            for path in chosen:
                write_prediction(predictor.predict(path), out, path.stem)
            totals[kind] = (time.perf_counter() - started) * 1000.0 / len(chosen)
        table[kind] = {step: seconds * 1000.0 / len(chosen) for step, seconds in spent.items()}
    print("\nwhere one slice's milliseconds go (one slice at a time; ms per slice):")
    print(f"{'step':44s}" + "".join(f"{kind:>8s}" for kind in kinds))
    for _, step in STEPS:
        print(f"{step:44s}" + "".join(f"{table[k].get(step, 0.0):8.2f}" for k in kinds))
    print(f"{'all of predict and writing':44s}" + "".join(f"{totals[k]:8.2f}" for k in kinds))


def rounds(
    name: str, work: Callable[[], object], network: Callable[[], object], count: int, repeats: int
) -> tuple[float, float, float, float]:
    """``repeats`` rounds of the network's time and then the work's, back to back (the
    machine's speed drifts: each ratio compares neighbours). Returns ms per slice of
    each (their best), and the median and the spread of the rounds' ratios."""
    works, networks, ratios = [], [], []
    for _ in range(repeats):
        networks.append(best_ms(network, 1) / count)
        works.append(best_ms(work, 1) / count)
        ratios.append(works[-1] / networks[-1])
    print(
        f"{name:34s}{min(works):11.1f}{min(networks):9.1f}{statistics.median(ratios):7.2f}"
        f"   ({min(ratios):.2f}-{max(ratios):.2f})"
    )
    return min(works), min(networks), statistics.median(ratios), max(ratios)


def compare_in_turn(
    label: str,
    values: list[int],
    setting: Callable[[int], int],
    work: Callable[[], object],
    network: Callable[[], object],
    repeats: int,
) -> None:
    """``work`` with each of ``values`` set (``setting``), taken in turn within each
    round, each against the network timed just before; ``label`` names a row with
    ``{value}``."""
    ratios: dict[int, list[float]] = {value: [] for value in values}
    before = setting(values[0])
    for _ in range(repeats):
        for value in values:
            setting(value)
            ratios[value].append(best_ms(work, 1) / best_ms(network, 1))
    setting(before)  # the product's own setting again for what runs after
    for value in values:
        print(
            f"{label.format(value=value):34s}{'':20s}"
            f"{statistics.median(ratios[value]):7.2f}   "
            f"({min(ratios[value]):.2f}-{max(ratios[value]):.2f})"
        )


def set_chunk(value: int) -> int:
    """Slices a chunk through the network; returns the setting it replaced."""
    before, model_module.CHUNK = model_module.CHUNK, value
    return before


def set_lanes(value: int) -> int:
    """Slices of a list at a time; returns the setting it replaced."""
    before, batch_module.LANES = batch_module.LANES, value
    return before


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--slices", type=int, default=16, help="slices of each kind of file")
    parser.add_argument("--repeats", type=int, default=9, help="rounds; the median ratio counts")
    parser.add_argument(
        "--only", choices=("list", "series", "api"), action="append", help="measure just these"
    )
    parser.add_argument("--breakdown", action="store_true", help="where a slice's ms go")
    parser.add_argument(
        "--chunks", type=int, nargs="+", help="the series with these chunk sizes, in turn"
    )
    parser.add_argument(
        "--lanes", type=int, nargs="+", help="the list with these slices at a time, in turn"
    )
    args = parser.parse_args()
    if not SERIES.is_dir():
        raise SystemExit(f"needs the real data in {DATA}")
    keep_freed_memory()  # as `lungseg predict` and `lungseg serve` do
    chosen = set(args.only or ("list", "series", "api"))
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        paths = slices_as_saved(work / "in", args.slices)
        predictor = Predictor()  # the shipped one-pass network: lungs and infection
        model = predictor.model
        squares = model_inputs(model, paths)
        series_squares = model_inputs(model, SERIES)
        list_through_predict(predictor, paths[:4], work / "warm")  # start-up excluded
        series_through_predict(predictor, work / "warm")
        print(
            f"{len(paths)} slices of 512 x 512 ({args.slices} each DICOM, PNG, JPEG) and the "
            f"{series_squares.shape[0]}-slice DICOM series, infection on; {model.path.name}, "
            f"onnxruntime on all cores; {args.repeats} rounds, each ratio against the "
            "network timed just before"
        )
        print(f"{'':34s}{'ms a slice':>11s}{'network':>9s}{'ratio':>7s}   (rounds' range)")
        if "list" in chosen and args.lanes:
            compare_in_turn(
                "a list, {value} slice(s) at a time",
                args.lanes,
                set_lanes,
                lambda: list_through_predict(predictor, paths, work / "out"),
                lambda: network_one_at_a_time(model, squares),
                args.repeats,
            )
        elif "list" in chosen:
            rounds(
                "lungseg predict, a list",
                lambda: list_through_predict(predictor, paths, work / "out"),
                lambda: network_one_at_a_time(model, squares),
                len(paths),
                args.repeats,
            )
        if "series" in chosen and args.chunks:
            compare_in_turn(
                "the series, {value} slices a chunk",
                args.chunks,
                set_chunk,
                lambda: series_through_predict(predictor, work / "out"),
                lambda: model.run(series_squares),
                args.repeats,
            )
        elif "series" in chosen:
            rounds(
                f"the {series_squares.shape[0]}-slice DICOM series",
                lambda: series_through_predict(predictor, work / "out"),
                lambda: model.run(series_squares),
                series_squares.shape[0],
                args.repeats,
            )
        if "api" in chosen:
            dicoms = [p for p in paths if p.suffix == ".dcm"]
            first = paths.index(dicoms[0])
            dicom_squares = squares[first : first + len(dicoms)]
            with server() as port:
                for path in dicoms[:3]:
                    post_slice(port, path)  # warm-up

                def requests() -> None:
                    for path in dicoms:
                        post_slice(port, path)

                rounds(
                    "a DICOM slice through the API",
                    requests,
                    lambda: network_one_at_a_time(model, dicom_squares),
                    len(dicoms),
                    args.repeats,
                )
        if args.breakdown:
            breakdown(predictor, paths, work / "out")


if __name__ == "__main__":
    main()
