"""A model file turned back into a trainable run (``training.recover``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from real_slices import one_slice_of_each_source
from synthetic import build_tiny_dataset

from lungseg.cli import main
from lungseg.dataset.store import BuiltDataset
from lungseg.errors import LungsegError
from lungseg.training.config import TrainConfig
from lungseg.training.export import export_onnx
from lungseg.training.fast_graph import phases_to_transposed, transposed_to_phases
from lungseg.training.model import create_model, warm_start
from lungseg.training.orientation import HEAD_FILE, OrientedNetwork, head_for
from lungseg.training.quantize import calibration_inputs, quantize_onnx
from lungseg.training.recover import network_for, recover_run

HEADS = {"lung": (0, 3), "infection": (3, 7)}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_dataset(tmp_path_factory.mktemp("data"), finding=8, medseg=4)


def _card() -> dict[str, object]:
    return {
        "task": "lung+infection",
        "architecture": {
            "name": "unet-two-decoders",
            "channels": [4, 8, 16],
            "num_res_units": 2,
        },
        "input": {"preprocessing": {"size": 32}},
        "output": {"heads": HEADS, "orientation": {"name": "orientation"}},
    }


def _trained_looking(seed: int = 0) -> torch.nn.Module:
    """The card's network with weights, batch statistics and slopes far from their
    starting values, as a trained one has them."""
    _, network = network_for(_card())
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in network.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5, generator=generator)
                module.running_var.uniform_(0.3, 2.0, generator=generator)
                module.weight.uniform_(0.5, 1.5, generator=generator)
                module.bias.uniform_(-0.3, 0.3, generator=generator)
            elif isinstance(module, torch.nn.PReLU):
                module.weight.uniform_(0.05, 0.4, generator=generator)
    return network.eval()


def _write_model(network: torch.nn.Module, path: Path) -> Path:
    export_onnx(network, path, 32, HEADS)
    path.with_suffix(".json").write_text(json.dumps(_card()))
    return path


def _outputs(network: torch.nn.Module, images: np.ndarray) -> tuple[torch.Tensor, ...]:
    with torch.no_grad():
        return tuple(network(torch.from_numpy(images)))


def _recovered(run: Path) -> OrientedNetwork:
    config = TrainConfig.load(run / "config.json")
    net = create_model(config)
    assert warm_start(
        net, TrainConfig(**{**vars(config), "init_from": str(run / "checkpoints" / "best.ckpt")})
    )
    head = head_for(config)
    head.load_state_dict(
        torch.load(run / "checkpoints" / HEAD_FILE, weights_only=True)["state_dict"]
    )
    return OrientedNetwork(net, head).eval()


def test_the_phase_form_of_an_up_sampling_kernel_turns_back_into_it() -> None:
    kernel = np.random.default_rng(0).normal(size=(6, 5, 3, 3))
    phases = transposed_to_phases(kernel)
    assert phases.shape == (20, 6, 2, 2)
    np.testing.assert_array_equal(phases_to_transposed(phases), kernel)
    with pytest.raises(LungsegError, match="phase convolution"):
        phases_to_transposed(kernel)


def test_a_float_model_file_gives_back_the_network_it_was_exported_from(
    dataset: Path, tmp_path: Path
) -> None:
    """Through the ONNX file only (batch norms folded, up-sampling as phases, PReLUs as
    leaky ReLUs), training's network comes back: the same logits and orientation, and
    batch norms with the statistics of the calibration slices."""
    original = _trained_looking()
    model = _write_model(original, tmp_path / "model.onnx")
    recover_run(model, tmp_path / "run", dataset)
    result = recover_run(model, tmp_path / "run", dataset, overwrite=True)  # replaced whole
    assert result.decisions_equal > 0.999
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.json", "model.onnx", "run"]
    recovered = _recovered(tmp_path / "run")
    images = np.random.default_rng(1).random((3, 1, 32, 32)).astype(np.float32)
    for want, got in zip(_outputs(original, images), _outputs(recovered, images), strict=True):
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    # each norm now normalises by what its convolution gives on the calibration slices,
    # so training mode (batch statistics) starts near evaluation mode
    calibration = calibration_inputs(
        BuiltDataset(dataset), TrainConfig.load(tmp_path / "run" / "config.json")
    )
    evaluated = _outputs(recovered, calibration)[0]
    recovered.train()
    trained = _outputs(recovered, calibration)[0]
    original.train()
    assert (trained - evaluated).abs().mean() < 0.1 * (
        _outputs(original, calibration)[0] - evaluated
    ).abs().mean()


def test_an_int8_model_file_gives_back_its_weights_to_a_quantisation_step(
    dataset: Path, tmp_path: Path, capsys
) -> None:
    original = _trained_looking(seed=3)
    source = _write_model(original, tmp_path / "float.onnx")
    config, _ = network_for(_card())
    images = calibration_inputs(BuiltDataset(dataset), config)
    int8 = quantize_onnx(source, tmp_path / "model.onnx", images, sorted(HEADS.values()))
    int8.with_suffix(".json").write_text(json.dumps(_card()))
    assert main(["recover", str(int8), "--out", str(tmp_path / "run"), "--data", str(dataset)]) == 0
    printed = capsys.readouterr().out
    assert "init_from" in printed
    recovery = json.loads((tmp_path / "run" / "recovery.json").read_text())
    assert recovery["decisions_equal_to_model_file"] > 0.97
    recovered = _recovered(tmp_path / "run")
    # a weight the network computes with (convolution scale folded in) is within a
    # quantisation step of the original's
    conv = recovered.net.lung.model[0].conv.unit1.conv
    norm = recovered.net.lung.model[0].conv.unit1.adn.N
    first = original.net.lung.model[0].conv.unit1
    scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
    want_scale = first.adn.N.weight / torch.sqrt(first.adn.N.running_var + first.adn.N.eps)
    got = conv.weight * scale[:, None, None, None]
    want = first.conv.weight * want_scale[:, None, None, None]
    # 7-bit weights by default: rounded to 8 bits, then to 7 (under 3/4 of a 7-bit step)
    step = want.abs().flatten(1).max(1).values / 63
    error = (got - want).abs().flatten(1).max(1).values
    assert (error <= 0.76 * step).all(), (error / step).tolist()
    assert (error > 0).any()  # it was quantised


def test_a_model_file_that_is_not_the_cards_network_is_refused(
    dataset: Path, tmp_path: Path
) -> None:
    model = _write_model(_trained_looking(), tmp_path / "model.onnx")
    card = _card()
    card["architecture"]["channels"] = [4, 8, 32]  # type: ignore[index]
    model.with_suffix(".json").write_text(json.dumps(card))
    with pytest.raises(LungsegError, match="does not match its card"):
        recover_run(model, tmp_path / "run", dataset)
    model.with_suffix(".json").unlink()
    with pytest.raises(LungsegError, match="no model card"):
        recover_run(model, tmp_path / "run", dataset)
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "config.json").write_text("{}")
    with pytest.raises(LungsegError, match="--overwrite"):
        recover_run(model, tmp_path / "taken", dataset)
    assert (tmp_path / "taken" / "config.json").read_text() == "{}"
    (tmp_path / "broken.onnx").write_bytes(b"not onnx")
    (tmp_path / "broken.json").write_text(json.dumps(_card()))
    with pytest.raises(LungsegError, match="not a readable ONNX model"):
        recover_run(tmp_path / "broken.onnx", tmp_path / "run", dataset)


@pytest.mark.parametrize("name", ["lung_unet", "infection_unet"])
def test_the_shipped_models_read_back_into_their_networks(shared_data: Path, name: str) -> None:
    """The exporter's layer names still name the shipped files' layers (a new torch
    could rename them): read back without calibration (the batch norms left the
    identity, the same function), each network decides as its file does on real slices
    in three renderings."""
    from lungseg.inference.model import SHIPPED_MODEL, SegmentationModel
    from lungseg.training.recover import read_network

    path = SHIPPED_MODEL.with_name(f"{name}.onnx")
    _, network, _, _ = read_network(path)
    model = SegmentationModel(path)
    squares = one_slice_of_each_source(shared_data, model)
    expected = model.scores(squares)
    with torch.no_grad():
        got = network(torch.from_numpy(squares[:, None].astype(np.float32)))[0].numpy()
    for head, (start, stop) in model.heads.items():
        same = (got[:, start:stop].argmax(1) == expected[:, start:stop].argmax(1)).mean()
        assert same > 0.995, (head, same)


def test_a_recovery_that_fails_leaves_the_earlier_run_and_no_partial_one(
    dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lungseg.training import recover

    model = _write_model(_trained_looking(), tmp_path / "model.onnx")
    recover_run(model, tmp_path / "run", dataset)
    before = (tmp_path / "run" / "checkpoints" / "best.ckpt").read_bytes()

    def broken(*_args: object) -> float:
        raise OSError("disk full")

    monkeypatch.setattr(recover, "decision_agreement", broken)
    with pytest.raises(OSError, match="disk full"):
        recover_run(model, tmp_path / "run", dataset, overwrite=True)
    assert not (tmp_path / "run.partial").exists()
    assert (tmp_path / "run" / "checkpoints" / "best.ckpt").read_bytes() == before
