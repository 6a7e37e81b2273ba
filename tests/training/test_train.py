from __future__ import annotations

import csv
import json
import subprocess
import sys
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
from synthetic import build_tiny_dataset, ct_slice

from lungseg.cli import main
from lungseg.dataset.store import BuiltDataset
from lungseg.errors import LungsegError
from lungseg.imaging import Intensity
from lungseg.imaging.orientation import DIHEDRAL, apply_dihedral
from lungseg.inference.model import SegmentationModel
from lungseg.inference.preprocess import Preprocessing
from lungseg.training.augment import HU_RENDERINGS, Augmenter
from lungseg.training.config import AugmentConfig, TrainConfig
from lungseg.training.data import SliceDataset, prepare_split
from lungseg.training.train import train

if TYPE_CHECKING:
    import torch

NO_AUGMENT = AugmentConfig(
    renderings={"hu": 1.0},
    display_rendering=0,
    gamma=0,
    jpeg=0,
    crop=0,
    dihedral=0,
    affine=0,
    noise=0,
)


def tiny_config(**overrides: object) -> TrainConfig:
    values: dict[str, object] = {
        "image_size": 32,
        "channels": (4, 8, 16),
        "num_res_units": 0,
        "batch_size": 4,
        "max_epochs": 6,
        "max_minutes": 0,
        "num_workers": 0,
        "learning_rate": 0.02,
        "augment": NO_AUGMENT,
    }
    values.update(overrides)
    return TrainConfig(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_dataset(tmp_path_factory.mktemp("data"))


def _epochs(metrics: Path, key: str) -> list[float]:
    with metrics.open() as handle:
        return [float(r[key]) for r in csv.DictReader(handle) if r.get(key)]


@pytest.mark.slow
def test_training_runs_loss_falls_and_leaves_a_complete_run(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    result = train(tiny_config(), tiny_dataset, out)
    for name in (
        "config.json",
        "metrics.csv",
        "curves.png",
        "model.onnx",
        "model_card.json",
        "checkpoints/best.ckpt",
    ):
        assert (out / name).exists(), name
    losses = _epochs(out / "metrics.csv", "train_loss")
    assert len(losses) == 6
    assert min(losses[-2:]) < losses[0]
    assert result.onnx_max_difference < 1e-4
    card = json.loads((out / "model_card.json").read_text())
    assert card["input"]["shape"] == ["batch", 1, 32, 32]
    assert len(card["onnx"]["sha256"]) == 64
    assert TrainConfig.load(out / "config.json") == tiny_config()
    # the int8 model beside it: integer weights, the same decisions nearly everywhere
    import onnx

    graph = onnx.load(str(out / "model_int8.onnx")).graph
    operators = {node.op_type for node in graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= operators
    assert not {"PRelu", "ConvTranspose", "Softmax"} & operators  # training.fast_graph
    int8 = json.loads((out / "model_int8.json").read_text())
    assert int8["onnx"]["file"] == "model_int8.onnx"
    assert int8["onnx"]["quantization"]["decisions_equal_to_float_model"] > 0.9
    # its weights safe on processors without VNNI: 7 bits, and the card says so
    from onnx import numpy_helper

    from lungseg.inference.card import SAFE_FORMAT_MARK

    assert SAFE_FORMAT_MARK in int8["onnx"]["quantization"]["format"]
    constants = {t.name: t for t in graph.initializer}
    weights = [
        numpy_helper.to_array(constants[n.input[0]])
        for n in graph.node
        if n.op_type == "DequantizeLinear" and n.input[0] in constants
    ]
    int8_weights = [w for w in weights if w.dtype == np.int8]
    assert int8_weights and max(int(np.abs(w.astype(int)).max()) for w in int8_weights) <= 64
    assert int8["input"] == card["input"]
    assert int8["output"]["name"] == "logits" == graph.output[0].name
    assert int8["output"]["classes"] == card["output"]["classes"]
    with pytest.raises(LungsegError, match="already holds a run"):
        train(tiny_config(), tiny_dataset, out)


@pytest.mark.slow
def test_same_seed_same_numbers(tiny_dataset: Path, tmp_path: Path) -> None:
    config = tiny_config(max_epochs=2, augment=AugmentConfig())
    train(config, tiny_dataset, tmp_path / "a")
    train(config, tiny_dataset, tmp_path / "b")
    assert _epochs(tmp_path / "a" / "metrics.csv", "val_dice") == pytest.approx(
        _epochs(tmp_path / "b" / "metrics.csv", "val_dice"), abs=1e-4
    )


def test_config_round_trip_and_unknown_settings(tmp_path: Path) -> None:
    config = tiny_config()
    assert TrainConfig.from_dict(json.loads(json.dumps(asdict(config)))) == config
    with pytest.raises(LungsegError, match="unknown training settings: epochs"):
        TrainConfig.from_dict({"epochs": 3})
    with pytest.raises(LungsegError, match="unknown augmentation settings"):
        TrainConfig.from_dict({"augment": {"flip": 1}})


def test_augmentation_keeps_image_and_sides_together() -> None:
    """Under every flip and turn the patient's right lung stays labelled right: the label
    moves with the lung, whichever side of the picture it ends on."""
    hu, labels = ct_slice(48)  # 1: the lung on the image's left = the patient's right
    config = AugmentConfig(**{**asdict(NO_AUGMENT), "dihedral": 1.0})
    augmenter = Augmenter(config, Preprocessing(size=48), seed=3)
    seen = set()
    for _ in range(24):
        image, moved = augmenter(hu, Intensity.HU, labels)
        assert image.shape == moved.shape == (48, 48)
        # the same pixels stay lung, and the right lung keeps its pixel count and darkness
        assert (moved == 1).sum() == (labels == 1).sum()
        assert (moved == 2).sum() == (labels == 2).sum()
        assert np.median(image[moved == 1]) < 0.4 and np.median(image[moved == 2]) < 0.4
        seen.add(tuple(np.argwhere(moved == 1).mean(axis=0).round()))
    assert len(seen) >= 4  # the right lung really travelled around the picture


def test_each_rendering_changes_the_picture_and_the_draws_are_reproducible() -> None:
    hu, labels = ct_slice(48)
    rows, cols = np.ogrid[:48, :48]
    hu[(rows - 23.5) ** 2 + (cols - 23.5) ** 2 > 24**2] = -2000  # padding outside the scan circle
    pictures = {}
    rng = np.random.default_rng(0)
    for name, rendering in HU_RENDERINGS.items():
        picture = rendering(hu, rng)
        assert picture.dtype == np.uint8 and picture.shape == hu.shape, name
        pictures[name] = picture
    # a soft-tissue window shows the lungs as black as the air; a lung window does not
    assert pictures["soft_tissue"][labels == 1].mean() < 5
    assert pictures["lung_window"][labels == 1].mean() > 20
    assert len({p.tobytes() for p in pictures.values()}) == len(pictures)
    # with the padding kept, air inside the circle turns grey; clipped at -1024 it is black
    assert pictures["min_max_padded"][0, 24] > 60 and pictures["min_max"][0, 24] < 15
    config = AugmentConfig(jpeg=1.0, gamma=1.0)
    first = Augmenter(config, Preprocessing(size=48), seed=5)(hu, Intensity.HU, labels)
    second = Augmenter(config, Preprocessing(size=48), seed=5)(hu, Intensity.HU, labels)
    np.testing.assert_array_equal(first[0], second[0])
    third = Augmenter(config, Preprocessing(size=48), seed=6)(hu, Intensity.HU, labels)
    assert not np.array_equal(first[0], third[0])


def test_training_and_inference_give_the_model_identical_inputs(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    """The one pre-processing: the training data path without augmentation and the
    exported model's own preparation make the same input, bit for bit, for every slice
    (HU slices and 8-bit ones of every size)."""
    from models import dark_is_lung_onnx

    model = SegmentationModel(dark_is_lung_onnx(tmp_path / "m.onnx", size=40))
    dataset = BuiltDataset(tiny_dataset)
    slices = prepare_split(dataset, "train")
    assert {s.intensity for s in slices} == {Intensity.HU, Intensity.DISPLAY}
    assert len({s.image.shape for s in slices}) > 1
    training_view = SliceDataset(slices, Preprocessing(size=40))
    for index, item in enumerate(slices):
        squares, _ = model.prepare([item.image], [item.intensity])
        np.testing.assert_array_equal(training_view.model_input(index)[0], squares[0])


@pytest.mark.slow
def test_train_command(tiny_dataset: Path, tmp_path: Path, capsys) -> None:
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps(asdict(tiny_config(max_epochs=1))))
    code = main(
        [
            "train",
            "--data",
            str(tiny_dataset),
            "--out",
            str(tmp_path / "run"),
            "--config",
            str(config),
        ]
    )
    assert code == 0
    assert "best validation Dice" in capsys.readouterr().out
    bad = tmp_path / "bad.json"
    bad.write_text('{"epochz": 1}')
    assert (
        main(
            [
                "train",
                "--data",
                str(tiny_dataset),
                "--out",
                str(tmp_path / "r2"),
                "--config",
                str(bad),
            ]
        )
        == 2
    )


def test_display_slices_get_renderings_on_top() -> None:
    hu, labels = ct_slice(48)
    grey = np.clip((hu.astype(np.float32) + 1250) / 1500 * 255, 0, 255).astype(np.uint8)
    preprocessing = Preprocessing(size=48)
    plain, _ = Augmenter(NO_AUGMENT, preprocessing, seed=1)(grey, Intensity.DISPLAY, labels)
    np.testing.assert_array_equal(plain, grey / np.float32(255.0))
    config = AugmentConfig(**{**asdict(NO_AUGMENT), "display_rendering": 1.0})
    rendered, mask = Augmenter(config, preprocessing, seed=1)(grey, Intensity.DISPLAY, labels)
    assert not np.allclose(plain, rendered)
    np.testing.assert_array_equal(mask, labels)  # intensity only: the labels stay put


def test_sides_survive_every_orientation_of_the_reference() -> None:
    """A one-label mask gets its sides in the upright view; turned, they move with it."""
    from lungseg.core.masks import reference_sides

    _, labels = ct_slice(48)
    sides = reference_sides(np.where(labels > 0, 3, 0).astype(np.uint8))
    np.testing.assert_array_equal(sides, labels)  # image-left lung = patient's right = 1
    for turns, flip in DIHEDRAL:
        turned = apply_dihedral(sides, turns, flip)
        assert (turned == 1).sum() == (labels == 1).sum()


@pytest.mark.slow
@pytest.mark.parametrize("num_res_units", [0, 2])
def test_a_network_with_an_infection_head_starts_as_the_lung_model_it_grew_from(
    tiny_dataset: Path, tmp_path: Path, num_res_units: int
) -> None:
    """``init_from``: the lung head of a lung+infection network started from a lung run
    gives exactly the lung run's outputs before any training step."""
    import torch

    from lungseg.training.model import create_model, start_from

    lung = tiny_config(max_epochs=1, num_res_units=num_res_units)
    train(lung, tiny_dataset, tmp_path / "lung")
    checkpoint = tmp_path / "lung" / "checkpoints" / "best.ckpt"
    joint = tiny_config(task="lung+infection", num_res_units=num_res_units)
    grown = create_model(joint).eval()
    whole, partial = start_from(grown, checkpoint)
    assert whole > 0 and partial > 0
    stored = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    original = create_model(lung).eval()
    original.load_state_dict({k.removeprefix("model."): v for k, v in stored.items()})
    image = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(grown(image)[:, :3], original(image), atol=1e-5, rtol=1e-5)
    with pytest.raises(LungsegError, match="not a lungseg training checkpoint"):
        start_from(grown, tmp_path / "lung" / "config.json")


@pytest.mark.slow
def test_lungseg_train_runs_data_parallel_on_two_processes(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    """DDP over 2 CPU processes (gloo): the path to several GPUs or machines is the same
    command with other ``devices``/``num_nodes``. The second process is started by
    Lightning running the command again; the first writes the run and reports it."""
    config = tmp_path / "ddp.json"
    settings = asdict(tiny_config(max_epochs=2, accelerator="cpu", devices="2", strategy="ddp"))
    config.write_text(json.dumps(settings))
    command = [sys.executable, "-m", "lungseg", "train", "--data", str(tiny_dataset)]
    command += ["--out", str(tmp_path / "run"), "--config", str(config)]
    run = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    printed = run.stdout + run.stderr
    assert run.returncode == 0, printed[-2000:]
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in printed, printed[-2000:]
    assert printed.count("trained 2 epochs") == 1
    assert (tmp_path / "run" / "model.onnx").exists()


@pytest.mark.parametrize("num_res_units", [0, 2])
def test_two_decoders_read_one_encoder_each_started_from_its_own_run(
    tmp_path: Path, num_res_units: int
) -> None:
    """``unet-two-decoders``: the lung output is the lung run's network exactly; the
    infection output is the infection run's decoder on the lung run's encoder (the
    infection network with its encoder weights swapped for the lung's)."""
    import torch

    from lungseg.training.model import TwoDecoderUNet, create_model, warm_start

    def saved(network: torch.nn.Module, name: str) -> Path:
        state = {f"model.{key}": value for key, value in network.state_dict().items()}
        torch.save({"state_dict": state}, tmp_path / name)
        return tmp_path / name

    torch.manual_seed(0)
    lung = create_model(tiny_config(num_res_units=num_res_units)).eval()
    infection = create_model(tiny_config(task="infection-all", num_res_units=num_res_units))
    for parameter in infection.parameters():  # far from the lung network's weights
        torch.nn.init.normal_(parameter, std=0.3)
    infection.eval()
    config = tiny_config(
        task="lung+infection",
        architecture="unet-two-decoders",
        num_res_units=num_res_units,
        init_from=str(saved(lung, "lung.ckpt")),
        init_infection_from=str(saved(infection, "infection.ckpt")),
    )
    both = create_model(config).eval()
    assert isinstance(both, TwoDecoderUNet)
    assert len(warm_start(both, config)) == 2
    # the infection network with the lung network's encoder: what the second decoder reads
    encoder = {k: v for k, v in lung.state_dict().items() if k in infection_encoder_keys(infection)}
    infection.load_state_dict(encoder, strict=False)
    image = torch.rand(3, 1, 32, 32)
    with torch.no_grad():
        out = both(image)
        torch.testing.assert_close(out[:, :3], lung(image))
        torch.testing.assert_close(out[:, 3:], infection(image))
    # a run of the two-decoder network starts the next one whole
    again = replace(config, init_from=str(saved(both, "both.ckpt")), init_infection_from="")
    restarted = create_model(again).eval()
    assert len(warm_start(restarted, again)) == 1
    with torch.no_grad():
        torch.testing.assert_close(restarted(image), out)
    with pytest.raises(LungsegError, match="starts both decoders already"):
        warm_start(restarted, replace(again, init_infection_from=config.init_infection_from))


def infection_encoder_keys(network: torch.nn.Module) -> set[str]:
    """Names of a MONAI U-Net's encoder weights: its down layers and its bottom layer."""
    from lungseg.training.model import _levels

    levels, bottom = _levels(network)
    names = {id(p): n for n, p in network.named_parameters()}
    names |= {id(b): n for n, b in network.named_buffers()}
    modules = [level[0] for level in levels] + [bottom.submodule]
    tensors = [t for m in modules for t in (*m.parameters(), *m.buffers())]
    return {names[id(t)] for t in tensors}


def test_two_decoders_need_a_lung_and_an_infection_head() -> None:
    from lungseg.training.model import create_model, warm_start

    with pytest.raises(LungsegError, match="needs a task with a lung and an infection head"):
        create_model(tiny_config(task="lung", architecture="unet-two-decoders"))
    with pytest.raises(LungsegError, match="unknown architecture"):
        create_model(tiny_config(architecture="vnet"))
    plain = tiny_config(init_infection_from="runs/x/checkpoints/best.ckpt")
    with pytest.raises(LungsegError, match="needs the 'unet-two-decoders' architecture"):
        warm_start(create_model(plain), plain)


@pytest.mark.parametrize("num_res_units", [0, 1])
def test_the_unet_written_out_is_monais_and_gives_its_deepest_features(num_res_units: int) -> None:
    import torch

    from lungseg.training.model import create_model
    from lungseg.training.orientation import encoder_bottom, unet_with_bottom

    torch.manual_seed(0)
    net = create_model(tiny_config(num_res_units=num_res_units)).eval()
    both = create_model(
        tiny_config(
            task="lung+infection", architecture="unet-two-decoders", num_res_units=num_res_units
        )
    ).eval()
    image = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        logits, bottom = unet_with_bottom(net, image)  # type: ignore[arg-type]
        torch.testing.assert_close(logits, net(image))
        torch.testing.assert_close(encoder_bottom(net, image), bottom)
        two_logits, two_bottom = both.forward_with_bottom(image)  # type: ignore[operator]
        torch.testing.assert_close(two_logits, both(image))
        torch.testing.assert_close(encoder_bottom(both, image), two_bottom)
    assert bottom.shape == (2, 16, 8, 8)  # the deepest level: 16 filters at a quarter size


@pytest.mark.slow
def test_lungseg_orient_adds_an_orientation_output_and_leaves_the_lungs_alone(
    tiny_dataset: Path, tmp_path: Path, capsys
) -> None:
    import onnx

    out = tmp_path / "run"
    train(tiny_config(max_epochs=2), tiny_dataset, out)
    images = np.random.default_rng(0).random((3, 32, 32)).astype(np.float32)
    before = SegmentationModel(out / "model.onnx")
    assert not before.orients
    lungs_before = before.scores(images)
    assert main(["orient", str(out), "--data", str(tiny_dataset), "--epochs", "2"]) == 0
    assert "turn found" in capsys.readouterr().out
    after = SegmentationModel(out / "model.onnx")
    assert after.orients
    probabilities, turns = after.run(images)
    np.testing.assert_allclose(probabilities, lungs_before, atol=1e-5)  # the network is frozen
    assert turns is not None and turns.shape == (3, 8)
    np.testing.assert_allclose(turns.sum(axis=1), 1.0, atol=1e-5)
    card = json.loads((out / "model_card.json").read_text())
    assert card["output"]["orientation"]["classes"][4] == "mirror+upright"
    assert 0.0 <= card["metrics"]["orientation_val_accuracy"] <= 1.0
    assert card["onnx"]["max_abs_difference_vs_pytorch"] < 1e-4
    for name in ("orientation_curves.png", "orientation_metrics.csv", "checkpoints/orientation.pt"):
        assert (out / name).is_file(), name
    outputs = [o.name for o in onnx.load(str(out / "model_int8.onnx")).graph.output]
    assert outputs == ["logits", "orientation"]
    assert SegmentationModel(out / "model_int8.onnx").orients
