"""Do averaged scores help? One ONNX file that averages a model's class scores over
mirrored copies of each input (test-time flips) and, optionally, over other models of the
same heads (an ensemble), for ``lungseg evaluate`` and ``benchmarks/model_time.py``.

The written model runs every input as it is and mirrored (``--flips h``: left-right;
``hv``: and upside down) in one batch, mirrors each answer back, and averages the scores
(logits of an int8 model) of every view and every model; the orientation output is the
first model's on the input as given. It costs one network pass per view and model.

    .venv/bin/python benchmarks/averaged_models.py src/lungseg/models/infection_unet.onnx \
        --flips h --out build/averaged/flips-h.onnx
    .venv/bin/lungseg evaluate --model build/averaged/flips-h.onnx --data build/train-dataset \
        --split test --no-variants --out build/evaluation-flips-h
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import onnx
from onnx import compose, helper, numpy_helper

from lungseg.core.files import sha256_of
from lungseg.inference.model import model_card

LOWEST = np.iinfo(np.int64).min


def _constant(graph: onnx.GraphProto, name: str, values: np.ndarray) -> str:
    graph.initializer.append(numpy_helper.from_array(values, name))
    return name


def _mirror(graph: onnx.GraphProto, source: str, axis: int, target: str) -> str:
    """``target`` = ``source`` reversed along ``axis``."""
    names = [f"{target}_{part}" for part in ("starts", "ends", "axes", "steps")]
    for name, value in zip(names, (-1, LOWEST, axis, -1), strict=True):
        _constant(graph, name, np.array([value], np.int64))
    graph.node.append(helper.make_node("Slice", [source, *names], [target]))
    return target


def averaged(model: Path, others: list[Path], flips: str, target: Path) -> Path:
    """Write the averaged model of ``model`` (and ``others``) over the views ``flips`` to
    ``target``, with ``model``'s card beside it."""
    main = onnx.load(str(model))
    members = [main] + [
        compose.add_prefix(onnx.load(str(other)), f"m{number}_")
        for number, other in enumerate(others, 1)
    ]
    image = main.graph.input[0]
    logits = main.graph.output[0].name
    # a model with an orientation head gives it as its second output
    orientation = main.graph.output[1].name if len(main.graph.output) > 1 else None
    channels, rows, cols = (
        d.dim_value for d in main.graph.output[0].type.tensor_type.shape.dim[1:]
    )
    axes = {"h": 3, "v": 2}
    views: list[int | None] = [None, *(axes[f] for f in flips)]

    graph = helper.make_graph([], "averaged", [image], [])
    inputs = [image.name] + [
        _mirror(graph, image.name, axes[flip], f"view_{index}")
        for index, flip in enumerate(flips, 1)
    ]
    graph.node.append(helper.make_node("Concat", inputs, ["views"], axis=0))
    split_shape = _constant(
        graph, "split_shape", np.array([len(views), -1, channels, rows, cols], np.int64)
    )
    terms: list[str] = []
    for number, member in enumerate(members):
        prefix = "" if number == 0 else f"m{number}_"
        renames = {member.graph.input[0].name: "views"}
        if number == 0:  # its outputs become inner names; the averaged ones take theirs
            renames |= {name: f"inner_{name}" for name in (logits, orientation) if name}
        for node in member.graph.node:
            node.input[:] = [renames.get(name, name) for name in node.input]
            node.output[:] = [renames.get(name, name) for name in node.output]
        graph.node.extend(member.graph.node)
        graph.initializer.extend(member.graph.initializer)
        inner = f"inner_{logits}" if number == 0 else f"{prefix}{logits}"
        split = f"{prefix}split_logits"
        graph.node.append(helper.make_node("Reshape", [inner, split_shape], [split]))
        for index, axis in enumerate(views):
            taken = f"{prefix}view_{index}_logits"
            position = _constant(graph, f"{taken}_index", np.array(index, np.int64))
            graph.node.append(helper.make_node("Gather", [split, position], [taken], axis=0))
            if axis is not None:
                taken = _mirror(graph, taken, axis, f"{taken}_back")
            terms.append(taken)
    graph.node.append(helper.make_node("Sum", terms, ["summed"]))
    share = _constant(graph, "share", np.array(1.0 / len(terms), np.float32))
    graph.node.append(helper.make_node("Mul", ["summed", share], [logits]))
    if orientation is not None:  # the first model's, on the input as given
        turn_shape = _constant(graph, "turn_shape", np.array([len(views), -1, 8], np.int64))
        graph.node.append(
            helper.make_node("Reshape", [f"inner_{orientation}", turn_shape], ["split_turns"])
        )
        first = _constant(graph, "first_view", np.array(0, np.int64))
        graph.node.append(helper.make_node("Gather", ["split_turns", first], [orientation], axis=0))
    graph.output.extend(main.graph.output[: 2 if orientation else 1])

    combined = helper.make_model(graph, opset_imports=main.opset_import)
    combined.ir_version = main.ir_version
    onnx.checker.check_model(combined)
    target.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(combined, str(target))
    card = model_card(model)
    card["name"] = f"{card.get('name', model.stem)}-averaged"
    card["averaged"] = {
        "views": ["as given"] + [{"h": "left-right", "v": "upside down"}[f] for f in flips],
        "models": [str(model), *map(str, others)],
    }
    card["onnx"] = {"file": target.name, "sha256": sha256_of(target)}
    target.with_suffix(".json").write_text(json.dumps(card, indent=2) + "\n")
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("model", type=Path, help="an .onnx model with its card beside it")
    parser.add_argument("--flips", default="h", choices=["", "h", "v", "hv"])
    parser.add_argument("--with", dest="others", type=Path, nargs="*", default=[])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    written = averaged(args.model, args.others, args.flips, args.out)
    print(f"written {written}: {1 + len(args.flips)} views x {1 + len(args.others)} models")


if __name__ == "__main__":
    main()
