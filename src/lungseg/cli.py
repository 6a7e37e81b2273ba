"""The ``lungseg`` command: one sub-command per job."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lungseg import __version__
from lungseg.core.memory import keep_freed_memory
from lungseg.core.scratch import sweep
from lungseg.errors import LungsegError
from lungseg.training.weights import DEFAULT_WEIGHTS, WEIGHT_FORMATS

if TYPE_CHECKING:
    from lungseg.inference.batch import BatchSettings


def _add_limit_flags(parser: argparse.ArgumentParser) -> None:
    """The reading limits a user may change (``imaging.readers.ReadLimits``)."""
    parser.add_argument(
        "--max-slices", type=int, default=1024, help="slices of one volume (default 1024)"
    )
    parser.add_argument(
        "--max-voxels",
        type=int,
        default=512 * 512 * 1024,
        help="voxels of one volume (default 512 x 512 x 1024)",
    )


def _fractions(text: str) -> tuple[float, float, float]:
    try:
        parts = tuple(float(p) for p in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected three numbers like 0.7,0.15,0.15, got {text!r}"
        ) from None
    from lungseg.dataset.split import check_fractions  # the CLI starts without the dataset stage

    try:
        check_fractions(parts)
    except LungsegError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return parts[0], parts[1], parts[2]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lungseg", description="Lung segmentation on chest CT.")
    parser.add_argument("--version", action="version", version=f"lungseg {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    dataset = commands.add_parser("dataset", help="stage 1: build or download training data")
    dataset_commands = dataset.add_subparsers(dest="dataset_command", required=True)

    build = dataset_commands.add_parser(
        "build",
        help="build a split, quality-checked 2D training set with a report",
        description="Sources: COVID-19-CT-Seg folders (Kaggle or Zenodo layout), folders of "
        "images with mask folders (2d_images+2d_masks, images+lung_masks[+infection_masks]), "
        "or folders of NIfTI volumes / DICOM series with NIfTI masks.",
    )
    build.add_argument("sources", nargs="+", type=Path, help="source folders")
    build.add_argument("--out", type=Path, required=True, help="folder to create")
    build.add_argument(
        "--fractions",
        type=_fractions,
        default=(0.7, 0.15, 0.15),
        help="train,val,test shares of patients (default 0.7,0.15,0.15)",
    )
    build.add_argument("--seed", type=int, default=0, help="split seed (default 0)")
    build.add_argument(
        "--keep-lung-free",
        type=float,
        default=0.0,
        metavar="SHARE",
        help="share of lung-free slices to keep (default 0)",
    )
    build.add_argument(
        "--slice-step",
        type=int,
        default=1,
        metavar="N",
        help="keep every N-th slice of a volume (default 1)",
    )
    build.add_argument(
        "--keep-flagged",
        action="store_true",
        help="train on slices that failed a quality check too",
    )
    build.add_argument("--overwrite", action="store_true", help="replace --out if it exists")

    download = dataset_commands.add_parser(
        "download", help="download a public dataset (resumable, checksummed)"
    )
    download.add_argument("name", choices=["covid19-ct-seg"], help="dataset to download")
    download.add_argument(
        "--out", type=Path, required=True, help="folder for archives and unpacked files"
    )
    download.add_argument(
        "--base-url", default=None, help="mirror to download from (default: Zenodo record 3757476)"
    )

    pseudo = dataset_commands.add_parser(
        "pseudo-label",
        help="label whole HU scans from thresholds (apex, base and lung-free levels) for training",
    )
    pseudo.add_argument("scans", nargs="+", type=Path, help="DICOM series folders or NIfTI volumes")
    pseudo.add_argument("--out", type=Path, required=True, help="source folder to write")

    train = commands.add_parser("train", help="stage 2: train the U-Net on a built dataset")
    train.add_argument(
        "--data", type=Path, required=True, help="folder made by `lungseg dataset build`"
    )
    train.add_argument(
        "--out", type=Path, required=True, help="run folder to create, e.g. runs/NAME"
    )
    train.add_argument("--config", type=Path, help="JSON file of TrainConfig settings")
    train.add_argument("--max-epochs", type=int, help="override max_epochs")
    train.add_argument("--max-minutes", type=float, help="override the wall-clock budget")
    train.add_argument("--seed", type=int, help="override the seed")
    train.add_argument("--accelerator", help="Lightning accelerator: auto, cpu, gpu, ...")
    train.add_argument("--devices", help="Lightning devices: auto, 2, 0,1 ...")
    train.add_argument("--strategy", help="Lightning strategy, e.g. ddp for several GPUs or nodes")
    train.add_argument("--num-nodes", type=int, help="machines for multi-node DDP")

    quantize = commands.add_parser(
        "quantize",
        help="write a run's int8 model (model_int8.onnx and its card), as lungseg train does "
        "(training.quantize)",
    )
    quantize.add_argument("run", type=Path, help="a run folder of lungseg train")
    quantize.add_argument(
        "--data", type=Path, required=True, help="the dataset the run was trained on (calibration)"
    )
    quantize.add_argument(
        "--weights",
        choices=sorted(WEIGHT_FORMATS),
        default=DEFAULT_WEIGHTS,
        help="8-bit weights safe on processors without VNNI: quantised again in 7 bits "
        "(the fast kernels stay exact; the default) or stored as uint8 (exactly the "
        "same values, slower kernels)",
    )

    orient = commands.add_parser(
        "orient",
        help="train a run's orientation head (which way a photo is turned) and export the run again",
    )
    orient.add_argument("run", type=Path, help="a run folder of lungseg train")
    orient.add_argument(
        "--data", type=Path, required=True, help="the dataset the run was trained on"
    )
    orient.add_argument("--epochs", type=int, default=8, help="epochs of the head (default 8)")

    predict = commands.add_parser(
        "predict",
        help="segment the lungs in slices and scans",
        description="Inputs: PNG/JPG/TIFF slices (or a folder of them), DICOM files, DICOM series "
        "(a folder or a .zip), NIfTI volumes. "
        "Writes per slice <stem>_mask.png, <stem>_overlay.png and, with infection, "
        "<stem>_infection.png; per volume <stem>_mask.nii.gz, <stem>_overlay.png (a montage), "
        "with infection <stem>_infection.nii.gz, and over a DICOM series <stem>_seg.dcm (a "
        "DICOM Segmentation); and per input <stem>_statistics.json, the summary --json "
        "prints. Mask labels: 0 background, 1 right lung, 2 left lung; infection "
        "labels: 1 ground glass, 2 consolidation, 3 pleural effusion. "
        'Every answer carries a check (--json: "check": {"status": "ok" | "review" | '
        '"refused", "reasons": [...]}): review says why to look before using it (a picture '
        "that may not be an axial CT slice, as a radiograph or a coronal picture, small apex "
        "or base lungs, unsure sides, ...); a colour photograph, a DICOM of another modality "
        "or a blank picture is refused with its reason and gets no files. "
        "Exit status: 0 when every input was segmented, 1 when any failed or was refused, "
        "2 on a usage or set-up error, 130 on Ctrl+C, 143 on SIGTERM (both remove what the "
        "run made on the way out).",
    )
    predict.add_argument("inputs", nargs="+", type=Path, help="files or DICOM folders")
    predict.add_argument("-o", "--out", type=Path, required=True, help="output folder")
    predict.add_argument(
        "--model",
        type=Path,
        help="ONNX model (default: the shipped one-pass network; with --no-infection the "
        "lung network)",
    )
    predict.add_argument("--json", action="store_true", help="print one JSON record per input")
    predict.add_argument("--no-infection", action="store_true", help="lungs only, no infection")
    predict.add_argument(
        "--quiet", action="store_true", help="no progress bars (results and errors still print)"
    )
    predict.add_argument(
        "--cohort",
        action="store_true",
        help="many scans (folders of scans, or a CSV with a 'path' column) on a Dask cluster: "
        "one row per scan in OUT/cohort.csv; run again to resume",
    )
    predict.add_argument(
        "--scheduler", help="with --cohort: a running Dask scheduler (tcp://host:8786)"
    )
    predict.add_argument(
        "--workers", type=int, default=2, help="with --cohort: local worker processes (default 2)"
    )
    predict.add_argument(
        "--processes",
        type=int,
        help="worker processes for a list of 2D pictures (default: one per core from 64 "
        "pictures on where there are more than 2 cores; else this process, two slices at a "
        "time; 0: this process)",
    )
    _add_limit_flags(predict)

    serve = commands.add_parser("serve", help="stage 3: the web API and the viewer page")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 for all)")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument(
        "--workers", type=int, default=1, help="worker processes (each loads the model once)"
    )
    serve.add_argument("--model", help="ONNX model (default: the shipped model)")
    serve.add_argument("--max-slice-mb", type=float, default=32.0, help="largest slice upload")
    serve.add_argument("--max-volume-mb", type=float, default=512.0, help="largest volume upload")
    serve.add_argument(
        "--threads", type=int, default=0, help="onnxruntime threads per worker (0: all cores)"
    )
    serve.add_argument("--no-infection", action="store_true", help="lungs only, no infection")
    serve.add_argument(
        "--max-jobs", type=int, default=2, help="segmentations at once per worker (default 2)"
    )
    serve.add_argument(
        "--max-queue",
        type=int,
        default=16,
        help="segmentations waiting per worker; beyond them the answer is 503 (default 16)",
    )
    _add_limit_flags(serve)
    serve.add_argument(
        "--header-timeout",
        type=float,
        default=10.0,
        help="seconds a connection may take to send a request head (default 10)",
    )
    serve.add_argument(
        "--min-body-rate",
        type=float,
        default=1024.0,
        help="bytes/s below which an upload is cut off (default 1024)",
    )
    serve.add_argument(
        "--max-connections",
        type=int,
        default=256,
        help="open connections per worker; more are closed at once (default 256)",
    )
    serve.add_argument(
        "--max-per-client",
        type=int,
        default=32,
        help="open connections per client address and worker; more are closed at once "
        "(default 32; 0 for none: behind a reverse proxy every client is the proxy)",
    )

    evaluate = commands.add_parser(
        "evaluate", help="stage 2: score a model on a split, with a report"
    )
    evaluate.add_argument("--model", type=Path, help="ONNX model (default: the shipped model)")
    evaluate.add_argument(
        "--data", type=Path, required=True, help="folder made by `lungseg dataset build`"
    )
    evaluate.add_argument("--split", default="test", choices=["train", "val", "test"])
    evaluate.add_argument("--out", type=Path, required=True, help="report folder")
    evaluate.add_argument(
        "--scan", type=Path, help="a whole scan without masks to check level by level"
    )
    evaluate.add_argument(
        "--no-variants", action="store_true", help="skip the orientation/PNG/JPEG variants"
    )
    return parser


def _slice_bar(path: Path) -> Callable[[int, int], None]:
    """A progress bar on stderr for a scan's slices (none for a single slice), under the
    bar over inputs."""
    from tqdm import tqdm

    bar: Any = None

    def progress(done: int, total: int) -> None:
        nonlocal bar
        if total <= 2:  # one slice, with or without infection
            return
        if bar is None:
            bar = tqdm(
                total=total, desc=path.name, unit="slice", leave=False, file=sys.stderr, position=1
            )
        bar.update(done - bar.n)
        if done >= total:
            bar.close()

    return progress


def _cohort(args: argparse.Namespace) -> int:
    from lungseg.inference.cohort import cohort_inputs, run_cohort

    try:
        import distributed  # noqa: F401
    except ImportError:
        raise LungsegError(
            "lungseg predict --cohort needs Dask: pip install 'lungseg[cohort]'"
        ) from None
    scans = cohort_inputs(args.inputs)
    settings = _batch_settings(args)
    bar: Any = None
    failed = 0
    if not args.quiet:
        from tqdm import tqdm

        bar = tqdm(total=len(scans), unit="scan", file=sys.stderr)

    def report(row: dict[str, str], done: int, total: int) -> None:
        nonlocal failed
        line = (
            f"{row['input']}: lungs {row['total_ml']} mL -> {row['stem']}"
            if row["status"] == "ok"
            else f"lungseg: failed: {row['error']}"
        )
        failed += row["status"] != "ok"
        if bar is not None:
            bar.n = done
            bar.write(line, file=sys.stderr if row["status"] != "ok" else sys.stdout)
            bar.refresh()
        else:
            print(line, file=sys.stderr if row["status"] != "ok" else sys.stdout)

    summary = run_cohort(
        scans, settings, scheduler=args.scheduler, workers=args.workers, on_row=report
    )
    if bar is not None:
        bar.close()
    print(f"summary: {summary}")
    return 1 if failed else 0


def _predict(args: argparse.Namespace) -> int:
    if args.cohort:
        return _cohort(args)
    from lungseg.inference.batch import (
        expand_inputs,
        process_workers,
        run_batch,
        unique_stems,
    )
    from lungseg.inference.encode import sweep_partials

    settings = _batch_settings(args)
    predictor = settings.predictor()
    for stale in sweep_partials(args.out):
        print(
            f"lungseg: removed a half-written file of an interrupted run: {stale}", file=sys.stderr
        )
    _check_writable(args.out)  # before any work
    inputs, skipped = expand_inputs(args.inputs)  # a folder of pictures: each picture a slice
    for line in skipped:
        print(f"lungseg: {line}", file=sys.stderr)
    stems, notes = unique_stems(inputs)
    for note in notes:
        print(f"lungseg: note: {note}", file=sys.stderr)
    failed = 0
    outcomes = run_batch(
        settings,
        inputs,
        stems,
        predictor=predictor,
        processes=process_workers(inputs, args.processes),  # long lists of pictures
        progress=None if args.quiet else _slice_bar,
    )
    model = predictor.model_info()
    inputs_bar = None
    if not args.quiet and len(inputs) > 1:
        from tqdm import tqdm

        inputs_bar = tqdm(total=len(inputs), unit="input", file=sys.stderr, position=0)
    say = print if inputs_bar is None else inputs_bar.write  # lines above the bars
    for outcome in outcomes:
        if inputs_bar is not None:
            inputs_bar.update(1)
        path, prediction, written = outcome.path, outcome.prediction, outcome.written
        if outcome.error is not None or prediction is None:
            failed += 1
            say(f"lungseg: failed: {outcome.error}", file=sys.stderr)
            if args.json:
                say(outcome.summary(model).model_dump_json())
            continue
        refused = prediction.check.status == "refused"
        if refused:  # not an axial chest CT: no files, and the run fails
            failed += 1
            say(f"lungseg: refused: {path}: {prediction.check.reasons[0]}", file=sys.stderr)
        if args.json:
            say(outcome.summary(model).model_dump_json())
        elif not refused:
            m, unit = prediction.measures, prediction.unit
            say(
                f"{path}: {prediction.kind}, lungs {m['total']:.1f} {unit} "
                f"(right {m['right']:.1f}, left {m['left']:.1f}), {prediction.seconds:.2f} s -> "
                + ", ".join(p.name for p in written)
            )
            for reason in prediction.check.reasons:  # why the answer needs a look
                say(f"  review: {reason}")
            for note in prediction.notes:  # how it was read: series chosen, values guessed...
                say(f"  note: {note}")
    if inputs_bar is not None:
        inputs_bar.close()
    if skipped:  # a folder held more than lungseg reads: say what was done with it
        print(
            f"lungseg: {len(inputs)} input(s): {len(inputs) - failed} segmented, {failed} "
            f"failed or refused; {len(skipped)} file(s) skipped",
            file=sys.stderr,
        )
    return 1 if failed else 0


def _batch_settings(args: argparse.Namespace) -> BatchSettings:
    """The one settings object of every batch runner (``inference.batch.BatchSettings``)."""
    from lungseg.imaging.readers import ReadLimits
    from lungseg.inference.batch import BatchSettings

    return BatchSettings(
        out=args.out,
        model=None if args.model is None else str(args.model),
        infection=not args.no_infection,
        limits=ReadLimits(max_slices=args.max_slices, max_voxels=args.max_voxels),
    )


def _check_writable(out: Path) -> None:
    """Refuse an output folder that cannot be written, before any input is read."""
    import tempfile

    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".lungseg-probe-"):
            pass
    except OSError as error:
        raise LungsegError(f"cannot write to --out {out}: {error.strerror or error}") from error


def _serve(args: argparse.Namespace) -> int:
    import os

    import uvicorn

    from lungseg.serve.protocol import GuardedH11Protocol
    from lungseg.serve.settings import ACCESS_LOG_CONFIG, ServeSettings

    settings = ServeSettings(
        args.model,
        args.max_slice_mb,
        args.max_volume_mb,
        args.threads,
        not args.no_infection,
        args.max_jobs,
        args.max_queue,
        args.max_slices,
        args.max_voxels,
    )
    os.environ.update(settings.to_env())  # the workers build their app from these
    os.environ.update(
        LUNGSEG_HEADER_TIMEOUT_S=str(args.header_timeout),
        LUNGSEG_MIN_BODY_RATE=str(args.min_body_rate),
        LUNGSEG_MAX_CONNECTIONS=str(args.max_connections),
        LUNGSEG_MAX_PER_CLIENT=str(args.max_per_client),
    )
    _check_address_free(args.host, args.port)
    print(
        f"lungseg: serving on http://{args.host}:{args.port}/ ({args.workers} worker(s)); Ctrl+C stops"
    )
    uvicorn.run(
        "lungseg.serve.app:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level="warning",
        http=GuardedH11Protocol,  # header and body timeouts, a connection limit
        timeout_keep_alive=5,
        log_config=ACCESS_LOG_CONFIG,  # one line per request (serve.app.ACCESS_LOGGER)
    )
    return 0


def _check_address_free(host: str, port: int) -> None:
    """Refuse, before claiming to serve, an address another program listens on."""
    import errno
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind((host, port))
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                raise LungsegError(
                    f"{host}:{port} is already in use (another server runs there): stop it "
                    f"or choose another port (lungseg serve --port N, make run PORT=N)"
                ) from None
            raise LungsegError(f"cannot listen on {host}:{port}: {error.strerror}") from None


def _evaluate(args: argparse.Namespace) -> int:
    from lungseg.evaluation.evaluate import evaluate
    from lungseg.inference.model import SegmentationModel

    model = SegmentationModel(args.model)
    if "lung" not in model.heads:
        raise LungsegError(
            f"{args.model}: a network of {model.task!r} alone; lungseg evaluates the networks "
            "predict uses, which find the lungs (and infection in the same pass)"
        )
    if model.has_infection_head:
        from lungseg.evaluation.infection import evaluate_infection

        out = Path(args.out) / "infection"
        summary = evaluate_infection(args.model, args.data, out, args.split)
        for source, scores in summary["sources"].items():
            print(
                f"infection, {source}: {scores['slices']} slices, Dice "
                f"{scores['infection']['dice']:.4f}, sensitivity "
                f"{scores['infection']['sensitivity']:.4f}, lesions found "
                f"{scores['lesion_sensitivity']:.4f}; per class "
                + ", ".join(f"{k} {v:.4f}" for k, v in scores["per_class_dice"].items())
            )
        print(f"report: {out / 'infection_report.md'}")

    result = evaluate(
        args.model, args.data, args.split, args.out, variants=not args.no_variants, scan=args.scan
    )
    for source, stats in result.summary["sources"].items():
        print(
            f"{source}: {stats['slices']} slices, mean Dice {stats['dice']['mean']:.4f}, "
            f"median {stats['dice']['median']:.4f}, IoU {stats['iou']['mean']:.4f}"
        )
    print(f"report: {Path(args.out) / 'report.md'}")
    return 0


def _train(args: argparse.Namespace) -> int:
    from lungseg.training.config import TrainConfig
    from lungseg.training.train import launched_by_ddp, train

    config = TrainConfig.load(args.config) if args.config else TrainConfig()
    for name in (
        "max_epochs",
        "max_minutes",
        "seed",
        "accelerator",
        "devices",
        "strategy",
        "num_nodes",
    ):
        if getattr(args, name) is not None:
            setattr(config, name, getattr(args, name))
    result = train(config, args.data, args.out)
    if launched_by_ddp():
        return 0  # the first process reports the run
    print(
        f"trained {result.epochs_run} epochs in {result.minutes:.1f} min; best validation Dice "
        f"{result.best_val_dice:.4f} (epoch {result.best_epoch}); ONNX vs PyTorch max difference "
        f"{result.onnx_max_difference:.2e}; run folder {result.out}"
    )
    return 0


def _quantize(args: argparse.Namespace) -> int:
    import json

    from lungseg.training.quantize import quantize_run

    target = quantize_run(args.run, args.data, weights=args.weights)
    card = json.loads(target.with_suffix(".json").read_text())
    agreement = card["onnx"]["quantization"]["decisions_equal_to_float_model"]
    print(
        f"{target}: int8, {target.stat().st_size / 1e6:.1f} MB; decisions equal to the "
        f"float model's on {100 * agreement:.2f} % of the calibration pixels"
    )
    return 0


def _orient(args: argparse.Namespace) -> int:
    from lungseg.training.orientation import train_orientation

    result = train_orientation(args.run, args.data, epochs=args.epochs)
    print(
        f"orientation head: {result.epochs} epochs in {result.minutes:.1f} min; validation "
        f"(8 turns of every slice): turn found {100 * result.val_accuracy:.1f} %, mirroring "
        f"{100 * result.val_mirror_accuracy:.1f} % (epoch {result.best_epoch}); "
        f"{args.run}/model.onnx and model_int8.onnx now say which way a picture is turned"
    )
    return 0


def _dataset_build(args: argparse.Namespace) -> int:
    from lungseg.dataset.build import BuildConfig, build_dataset

    config = BuildConfig(
        sources=[str(s) for s in args.sources],
        fractions=args.fractions,
        seed=args.seed,
        keep_lung_free=args.keep_lung_free,
        slice_step=args.slice_step,
        keep_flagged=args.keep_flagged,
    )
    summary = build_dataset(config, args.out, overwrite=args.overwrite)
    excluded = summary.slices_stored - summary.slices_used
    print(
        f"built {summary.out}: {summary.slices_stored} slices stored, "
        f"{summary.slices_used} for training, {excluded} excluded by QC (see qc.csv)"
    )
    print(f"report: {summary.out / 'report' / 'report.md'}")
    for path, why in summary.unreadable:
        print(f"unreadable, skipped: {path}: {why}", file=sys.stderr)
    for path in summary.unmatched:
        print(f"no mask, skipped: {path}", file=sys.stderr)
    return 0


def _dataset_pseudo_label(args: argparse.Namespace) -> int:
    from lungseg.dataset.pseudo import write_pseudo_labelled

    for picture in write_pseudo_labelled(args.scans, args.out):
        print(f"look at the labels before training on them: {picture}")
    return 0


def _dataset_download(args: argparse.Namespace) -> int:
    from lungseg.dataset.download import ZENODO_BASE_URL, download_dataset

    folder = download_dataset(args.name, args.out, base_url=args.base_url or ZENODO_BASE_URL)
    print(
        f"downloaded and unpacked into {folder}; next: lungseg dataset build {folder} --out DATASET"
    )
    return 0


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is, so that every ``with`` block on the way out
    removes what it made (temporary folders, half-written files), as Ctrl+C does."""


def _terminated(_signal: int, _frame: object) -> None:
    raise Terminated


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    keep_freed_memory()  # a slice's temporaries reused, not page-faulted anew (core.memory)
    for left in sweep():  # an unzipped series or an upload of a process that was killed
        print(f"lungseg: removed a temporary folder a killed run left: {left}", file=sys.stderr)
    before = None
    if threading.current_thread() is threading.main_thread():
        before = signal.signal(signal.SIGTERM, _terminated)
    try:
        return _run(args)
    finally:
        if before is not None:  # a caller's own handler back (main called from Python)
            signal.signal(signal.SIGTERM, before)


def _run(args: argparse.Namespace) -> int:
    handlers = {
        ("dataset", "build"): _dataset_build,
        ("dataset", "download"): _dataset_download,
        ("dataset", "pseudo-label"): _dataset_pseudo_label,
        ("train", ""): _train,
        ("evaluate", ""): _evaluate,
        ("quantize", ""): _quantize,
        ("orient", ""): _orient,
        ("predict", ""): _predict,
        ("serve", ""): _serve,
    }
    key: tuple[str, str] = (args.command, getattr(args, f"{args.command}_command", ""))
    try:
        return handlers[key](args)
    except LungsegError as error:
        print(f"lungseg: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as stop:
        what = "terminated" if isinstance(stop, Terminated) else "interrupted"
        print(f"lungseg: {what}; nothing half-written was left behind", file=sys.stderr)
        return 143 if isinstance(stop, Terminated) else 130


if __name__ == "__main__":
    sys.exit(main())
