"""A trainable run from a model file: the network's weights read back out of its ONNX.

Training runs (``runs/``) are not committed, so the only copy of a shipped network is
its ONNX file, in 8-bit integers with batch norms folded into the convolutions and the
up-sampling rewritten as phase convolutions (``training.fast_graph``). ``lungseg
recover MODEL.onnx --out RUN`` turns it back into a run that ``init_from`` (and
``lungseg orient``, ``lungseg quantize``) accept:

1. Which ONNX node is which PyTorch module: a network of the card's architecture is
   given distinct random weights, exported and rewritten the shipped way, and each
   node's weights are found among the modules' (``_node_modules``). Node names are the
   exporter's, so they name the same nodes in the shipped file.
2. Each node's weights, de-quantised (``_node_weights``), go into its module: a
   transposed convolution's back from phases, a leaky ReLU's slope into MONAI's PReLU,
   a folded convolution's scale into the convolution and its shift into the batch
   norm after it.
3. Batch norms get running statistics again (``_renormalise``): each folded
   convolution's output is measured on calibration slices, and the norm is set to
   normalise by those statistics and scale back, so its function is unchanged while
   training's batch statistics start near the ones it learnt with.

The recovered network is the shipped one in float: its decisions are compared with the
model file's on the calibration slices and written to ``recovery.json``.
"""

from __future__ import annotations

import copy
import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import onnx
import torch
from onnx import helper

from lungseg.core.files import sha256_of
from lungseg.dataset.store import BuiltDataset
from lungseg.errors import LungsegError
from lungseg.training.config import TrainConfig
from lungseg.training.export import export_onnx, write_model_card
from lungseg.training.fast_graph import initializers, phases_to_transposed, rewrite_for_int8
from lungseg.training.model import create_model
from lungseg.training.orientation import HEAD_FILE, OrientedNetwork, head_for
from lungseg.training.quantize import calibration_inputs, decision_agreement

_WEIGHTED = (torch.nn.Conv2d, torch.nn.ConvTranspose2d, torch.nn.Linear)
"""Modules whose weights an ONNX node holds (``Conv`` or ``Gemm``); PReLUs become
``LeakyRelu`` nodes, batch norms are folded."""


@dataclass
class Recovery:
    run: Path
    decisions_equal: float
    modules: int


def config_from_card(card: dict[str, Any]) -> TrainConfig:
    """The training config of the network a model card describes."""
    try:
        architecture = card["architecture"]
        return TrainConfig(
            task=card["task"],
            architecture=architecture["name"],
            channels=tuple(int(c) for c in architecture["channels"]),
            num_res_units=int(architecture["num_res_units"]),
            image_size=int(card["input"]["preprocessing"]["size"]),
        )
    except (KeyError, TypeError, ValueError) as error:
        raise LungsegError(
            f"the model card does not describe a lungseg network (missing {error})"
        ) from error


def network_for(card: dict[str, Any]) -> tuple[TrainConfig, torch.nn.Module]:
    """The card's network (with its orientation head where the card has one), eval mode."""
    config = config_from_card(card)
    net = create_model(config)
    if "orientation" in card.get("output", {}):
        net = OrientedNetwork(net, head_for(config))
    return config, net.eval()


def _norm_after(network: torch.nn.Module) -> dict[str, str]:
    """Each convolution followed by a batch norm (MONAI's ``Convolution`` registers its
    convolution, then its norm; the orientation head is a Sequential): conv name -> norm
    name."""
    pairs: dict[str, str] = {}
    last: tuple[str, torch.nn.Module] | None = None
    for name, module in network.named_modules():
        if isinstance(module, torch.nn.Conv2d | torch.nn.ConvTranspose2d):
            last = (name, module)
        elif isinstance(module, torch.nn.BatchNorm2d):
            if last is None:
                raise LungsegError(f"{name}: a batch norm with no convolution before it")
            conv_name, conv = last
            if module.num_features != cast(torch.nn.Conv2d, conv).out_channels:
                raise LungsegError(f"{name}: does not follow {conv_name}")
            pairs[conv_name] = name
            last = None
        elif isinstance(module, torch.nn.Linear):
            last = None
    return pairs


def _load(path: Path) -> onnx.ModelProto:
    try:
        return onnx.load(str(path))
    except Exception as error:  # onnx raises DecodeError, OSError and others
        raise LungsegError(f"{path}: not a readable ONNX model ({error})") from error


def _node_weights(model: onnx.ModelProto, path: Path) -> dict[str, dict[str, Any]]:
    """Per ``Conv``/``Gemm`` node of ``model`` (read from ``path``): ``weight`` and
    ``bias`` in float (de-quantised where the file stores them in integers) and
    ``transB``; per ``LeakyRelu`` node: ``alpha``."""
    graph = model.graph
    constants = initializers(graph)
    producers = {name: node for node in graph.node for name in node.output}

    def value(name: str) -> np.ndarray:
        if name in constants:
            return constants[name].astype(np.float64)
        node = producers.get(name)
        if node is not None and node.op_type == "Identity":  # the exporter's shared constants
            return value(node.input[0])
        if node is None or node.op_type != "DequantizeLinear":
            raise LungsegError(f"{path}: {name} is neither a constant nor a de-quantised one")
        integers = constants[node.input[0]].astype(np.float64)
        scale = constants[node.input[1]].astype(np.float64)
        zero = constants[node.input[2]].astype(np.float64) if len(node.input) > 2 else np.zeros(1)
        axis = int(
            next((helper.get_attribute_value(a) for a in node.attribute if a.name == "axis"), 1)
        )
        if scale.size > 1:  # per channel along ``axis``
            shape = [1] * integers.ndim
            shape[axis] = -1
            scale, zero = scale.reshape(shape), zero.reshape(shape)
        return (integers - zero) * scale

    weights: dict[str, dict[str, Any]] = {}
    for node in graph.node:
        attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type in ("Conv", "Gemm"):
            weights[node.name] = {
                "op": node.op_type,
                "weight": value(node.input[1]),
                "bias": value(node.input[2]) if len(node.input) > 2 else None,
                "transB": int(attributes.get("transB", 0)),
            }
        elif node.op_type == "LeakyRelu":
            weights[node.name] = {"op": "LeakyRelu", "alpha": float(attributes.get("alpha", 0.01))}
    return weights


def _fits(entry: dict[str, Any], module: torch.nn.Module) -> bool:
    """Whether a node's weight can be ``module``'s (its kind and shape)."""
    weight, shape = entry.get("weight"), tuple(cast(torch.Tensor, module.weight).shape)
    if weight is None:
        return False
    if isinstance(module, torch.nn.ConvTranspose2d):
        phases = (4 * shape[1], shape[0], 2, 2)
        return entry["op"] == "Conv" and weight.shape == phases and shape[2:] == (3, 3)
    if isinstance(module, torch.nn.Linear):
        return (
            entry["op"] == "Gemm" and (weight.T if not entry["transB"] else weight).shape == shape
        )
    return entry["op"] == "Conv" and weight.shape == shape


def _shipped_form_weights(
    path: Path, heads: dict[str, tuple[int, int]] | None
) -> dict[str, dict[str, Any]]:
    """``_node_weights`` of a model file in the form lungseg ships (``training.fast_graph``
    rewrites a run's float ``model.onnx`` first)."""
    model = _load(path)
    if not {node.op_type for node in model.graph.node} & {"PRelu", "ConvTranspose"}:
        return _node_weights(model, path)
    with tempfile.TemporaryDirectory(prefix="lungseg-recover-") as scratch:
        rewritten = rewrite_for_int8(
            path, Path(scratch) / "rewritten.onnx", sorted((heads or {}).values())
        )
        return _node_weights(_load(rewritten), rewritten)


def _as_module_weight(entry: dict[str, Any], module: torch.nn.Module) -> np.ndarray:
    """A node's weight in the shape and layout of ``module``'s."""
    weight = entry["weight"]
    if isinstance(module, torch.nn.ConvTranspose2d):
        return phases_to_transposed(weight)
    if isinstance(module, torch.nn.Linear) and not entry["transB"]:
        return np.asarray(weight.T)
    return np.asarray(weight)


def _node_modules(
    network: torch.nn.Module, config: TrainConfig, heads: dict[str, tuple[int, int]] | None
) -> dict[str, str]:
    """ONNX node name -> module name, for the shipped export and rewrite of ``network``'s
    architecture: a copy with distinct random weights (batch norms the identity, each
    PReLU its own slope) is exported and rewritten, and each node's weights are found
    among the modules'."""
    probe = copy.deepcopy(network).eval()
    generator = torch.Generator().manual_seed(0)
    slopes: dict[float, str] = {}
    with torch.no_grad():
        for name, module in probe.named_modules():
            if isinstance(module, _WEIGHTED):
                module.weight.copy_(torch.randn(module.weight.shape, generator=generator))
                if module.bias is not None:
                    module.bias.copy_(torch.randn(module.bias.shape, generator=generator))
            elif isinstance(module, torch.nn.BatchNorm2d):
                module.weight.fill_(1.0)
                module.bias.zero_()
                cast(torch.Tensor, module.running_mean).zero_()
                cast(torch.Tensor, module.running_var).fill_(1.0 - module.eps)
            elif isinstance(module, torch.nn.PReLU):
                slope = round(0.05 + 0.005 * len(slopes), 4)
                module.weight.fill_(slope)
                slopes[slope] = name
    candidates = [(n, m) for n, m in probe.named_modules() if isinstance(m, _WEIGHTED)]
    with tempfile.TemporaryDirectory(prefix="lungseg-recover-") as scratch:
        exported = export_onnx(probe, Path(scratch) / "probe.onnx", config.image_size, heads)
        rewritten = rewrite_for_int8(
            exported, Path(scratch) / "rewritten.onnx", sorted((heads or {}).values())
        )
        nodes = _node_weights(_load(rewritten), rewritten)
    found: dict[str, str] = {}
    for node_name, entry in nodes.items():
        if entry["op"] == "LeakyRelu":
            owner = slopes.get(round(entry["alpha"], 4))
        else:
            owner = next(
                (
                    name
                    for name, module in candidates
                    if _fits(entry, module)
                    and np.allclose(
                        _as_module_weight(entry, module),
                        module.weight.detach().numpy(),
                        rtol=1e-4,
                        atol=1e-5,
                    )
                ),
                None,
            )
        if owner is None:
            raise LungsegError(f"node {node_name}: no module of the network holds its weights")
        found[node_name] = owner
    expected = {n for n, _ in candidates} | set(slopes.values())
    missing = expected - set(found.values())
    if missing:
        raise LungsegError(f"no node holds the weights of {', '.join(sorted(missing))}")
    return found


def load_node_weights(
    network: torch.nn.Module, nodes: dict[str, str], weights: dict[str, dict[str, Any]]
) -> None:
    """Every module of ``network`` given its node's weights; a folded convolution's
    shift goes to its batch norm (which is left the identity: ``_renormalise`` gives it
    statistics)."""
    modules = dict(network.named_modules())
    norms = _norm_after(network)
    missing = sorted(set(nodes) - set(weights))
    if missing:
        raise LungsegError(
            f"the model file does not match its card: it lacks {len(missing)} of the "
            f"architecture's layers (first: {missing[0]})"
        )
    with torch.no_grad():
        for node_name, module_name in nodes.items():
            module, entry = modules[module_name], weights[node_name]
            if isinstance(module, torch.nn.PReLU):
                module.weight.fill_(entry["alpha"])
                continue
            if not _fits(entry, module):
                raise LungsegError(
                    f"the model file does not match its card: {node_name} holds weights of "
                    f"shape {entry['weight'].shape}, the card's {module_name} has "
                    f"{tuple(module.weight.shape)}"
                )
            weight = _as_module_weight(entry, module)
            module.weight.copy_(torch.from_numpy(weight))
            bias = entry["bias"]
            if bias is None:
                bias = np.zeros(
                    module.weight.shape[1 if isinstance(module, torch.nn.ConvTranspose2d) else 0]
                )
            if isinstance(module, torch.nn.ConvTranspose2d):  # the same shift for every phase
                bias = bias.reshape(4, -1)[0]
            norm_name = norms.get(module_name)
            if norm_name is None:
                if module.bias is None:
                    raise LungsegError(f"{module_name}: a shift and nowhere to put it")
                module.bias.copy_(torch.from_numpy(bias))
                continue
            norm = modules[norm_name]
            if module.bias is not None:
                module.bias.zero_()
            norm.weight.fill_(1.0)
            norm.bias.copy_(torch.from_numpy(bias))
            norm.running_mean.zero_()
            norm.running_var.fill_(1.0 - norm.eps)


def _renormalise(network: torch.nn.Module, images: np.ndarray, batch: int = 16) -> None:
    """Each batch norm after a convolution given the statistics of that convolution's
    output on ``images``, and scale and shift that undo them: the same function, with
    running statistics that training's batch statistics start near."""
    modules = dict(network.named_modules())
    pairs = _norm_after(network)
    sums: dict[str, list[torch.Tensor]] = {}

    def measure(name: str):  # type: ignore[no-untyped-def]
        def hook(_module: torch.nn.Module, _inputs: object, output: torch.Tensor) -> None:
            values = output.detach().double().transpose(0, 1).flatten(1)
            moments = [values.sum(1), (values * values).sum(1), torch.tensor(values.shape[1])]
            sums[name] = (
                [a + b for a, b in zip(sums[name], moments, strict=True)]
                if name in sums
                else moments
            )

        return hook

    handles = [modules[conv].register_forward_hook(measure(conv)) for conv in pairs]
    try:
        with torch.no_grad():
            for start in range(0, len(images), batch):
                network(torch.from_numpy(images[start : start + batch]))
    finally:
        for handle in handles:
            handle.remove()
    with torch.no_grad():
        for conv, norm_name in pairs.items():
            total, squares, count = sums[conv]
            mean = total / count
            variance = (squares / count - mean * mean).clamp_min(0.0)
            norm = modules[norm_name]
            shift = norm.bias.detach().double().clone()
            norm.running_mean.copy_(mean)
            norm.running_var.copy_(variance)
            norm.weight.copy_(torch.sqrt(variance + norm.eps))
            norm.bias.copy_(mean + shift)


def read_network(
    model: str | Path,
) -> tuple[TrainConfig, torch.nn.Module, dict[str, tuple[int, int]] | None, dict[str, Any]]:
    """The network ``model`` (an ONNX file with its card ``<stem>.json`` beside it, as
    lungseg ships them) was exported from, in eval mode, with its weights read back; its
    batch norms are the identity with the folded shift (the same function; ``recover_run``
    gives them statistics). Returns the config, the network, the heads and the card."""
    model = Path(model)
    card_path = model.with_suffix(".json")
    if not model.is_file():
        raise LungsegError(f"{model}: no such model file")
    if not card_path.is_file():
        raise LungsegError(f"{model}: no model card {card_path.name} beside it")
    try:
        card = json.loads(card_path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise LungsegError(f"{card_path}: cannot read the model card ({error})") from error
    config, network = network_for(card)
    heads = card.get("output", {}).get("heads")
    heads = {k: (int(a), int(b)) for k, (a, b) in heads.items()} if heads else None
    nodes = _node_modules(network, config, heads)
    load_node_weights(network, nodes, _shipped_form_weights(model, heads))
    return config, network.eval(), heads, card


def recover_run(
    model: str | Path, out: str | Path, data: str | Path, *, overwrite: bool = False
) -> Recovery:
    """``model`` (an ONNX file with its card ``<stem>.json`` beside it, as lungseg ships
    them) back into a run folder ``out`` that training can start from; ``data``: a built
    dataset whose training slices calibrate the batch norms. An existing ``out`` is
    replaced only with ``overwrite``, and only once the new run is complete."""
    model, final, data = Path(model), Path(out), Path(data)
    if final.exists() and not overwrite and (not final.is_dir() or any(final.iterdir())):
        raise LungsegError(f"{final} exists; name a new run folder, or pass --overwrite")
    config, network, heads, card = read_network(model)
    images = calibration_inputs(BuiltDataset(data), config)
    _renormalise(network, images)
    network.eval()

    out = final.with_name(final.name + ".partial")  # renamed once complete
    if out.exists():
        shutil.rmtree(out)
    (out / "checkpoints").mkdir(parents=True)
    try:
        agreement = _write_run(out, model, data, config, network, heads, card, images)
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise
    if final.is_dir():
        shutil.rmtree(final)
    elif final.exists():
        final.unlink()
    out.replace(final)
    layers = sum(isinstance(m, (*_WEIGHTED, torch.nn.PReLU)) for m in network.modules())
    return Recovery(final, agreement, layers)


def _write_run(
    out: Path,
    model: Path,
    data: Path,
    config: TrainConfig,
    network: torch.nn.Module,
    heads: dict[str, tuple[int, int]] | None,
    card: dict[str, Any],
    images: np.ndarray,
) -> float:
    """The run's files in ``out``; returns the share of calibration pixels decided as
    the model file decides them."""
    net = network.net if isinstance(network, OrientedNetwork) else network
    config.save(out / "config.json")
    state = {f"model.{k}": v for k, v in net.state_dict().items()}
    torch.save(
        {"state_dict": state, "recovered_from": str(model)}, out / "checkpoints" / "best.ckpt"
    )
    if isinstance(network, OrientedNetwork):
        torch.save(
            {"state_dict": network.head.state_dict(), "epoch": 0}, out / "checkpoints" / HEAD_FILE
        )
    exported = export_onnx(network, out / "model.onnx", config.image_size, heads)
    agreement = decision_agreement(exported, model, images)
    run_card = dict(card)
    run_card["output"] = {k: v for k, v in card["output"].items() if k != "values"}
    run_card["output"]["name"] = "probabilities"
    run_card["onnx"] = {"file": exported.name, "sha256": sha256_of(exported)}
    run_card["recovered"] = {
        "from": str(model),
        "sha256": sha256_of(model),
        "decisions_equal_to_model_file": round(agreement, 5),
        "calibration": f"{len(images)} training slices of {data}",
    }
    write_model_card(out / "model_card.json", run_card)
    (out / "recovery.json").write_text(json.dumps(run_card["recovered"], indent=2) + "\n")
    return agreement
