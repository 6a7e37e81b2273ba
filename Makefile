# Every README command is a target here. The venv is created on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DATA ?= ../shared/data
DATASET ?= build/dataset
TRAIN_DATA ?= build/train-dataset
RUN ?= runs/default
SCAN ?= $(DATA)/chest-ct-dicom/Lung_Dx-A0001

.PHONY: run browser test-fast dataset train-data model lung-model evaluate test lint docs docs-model clean

# Serving needs the core only (no torch, no browser tooling); everything else gets all.
$(BIN)/.core: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,train,cohort]'
	touch $@ $(BIN)/.core

HOST ?= 127.0.0.1
PORT ?= 8000
WORKERS ?= 1

# The main job: the web app and API with the shipped model, http://$(HOST):$(PORT)/
run: $(BIN)/.core
	$(BIN)/lungseg serve --host $(HOST) --port $(PORT) --workers $(WORKERS)

# Stage 1 on the real data: split, quality-checked training set with its report.
dataset: $(BIN)/.installed
	$(BIN)/lungseg dataset build $(DATA)/finding-lungs-ct $(DATA)/medseg-covid-98 \
		--out $(DATASET) --overwrite
	@echo "open $(DATASET)/report/report.md"

# Stage 2. The training set adds HU-threshold labels of a whole scan (apex, base,
# lung-free levels; training split only) to the labelled slices.
train-data: $(BIN)/.installed
	$(BIN)/lungseg dataset pseudo-label $(SCAN) --out build/pseudo/chest-ct-pseudo
	$(BIN)/lungseg dataset build $(DATA)/finding-lungs-ct $(DATA)/medseg-covid-98 \
		$(DATA)/covid19-ct-seg-clahe build/pseudo/chest-ct-pseudo --keep-lung-free 1 \
		--out $(TRAIN_DATA) --overwrite

# The lung network (lungseg predict --no-infection): at most 55 minutes on 2 cores, then
# its orientation head (which way a photo is turned; about 2.5 minutes, the network
# frozen), shipped in int8 (lungseg train and orient write model.onnx and model_int8.onnx;
# training.quantize), its 8-bit weights stored as uint8 (7 bits cost it 0.0012 MedSeg Dice).
lung-model: train-data
	$(BIN)/lungseg train --data $(TRAIN_DATA) --out $(RUN)
	$(BIN)/lungseg orient $(RUN) --data $(TRAIN_DATA)
	$(BIN)/lungseg quantize $(RUN) --data $(TRAIN_DATA) --weights unsigned
	cp $(RUN)/model_int8.onnx src/lungseg/models/lung_unet.onnx
	cp $(RUN)/model_int8.json src/lungseg/models/lung_unet.json

# The shipped default, the one-pass network lungseg predict uses (lungs and COVID-19
# infection, one encoder and a decoder per head), from the data in ../shared: the lung
# network above (about 58 minutes, skipped where runs/default has it), an infection
# network on every infection label (about 45 minutes; its decoder starts the next run's),
# the two-decoder network started from both (about 38 minutes), continued with a soft
# Dice per infection class (about 22 minutes), and its orientation head (about 3
# minutes): about 2 h 50 min on 2 cores in all. Shipped in int8, weights in 7 bits.
# What each step adds: docs/training.md.
model: train-data
	test -f runs/default/checkpoints/best.ckpt || $(MAKE) lung-model RUN=runs/default
	$(BIN)/lungseg train --data $(TRAIN_DATA) --out runs/infection-all --config configs/infection-all.json
	$(BIN)/lungseg train --data $(TRAIN_DATA) --out runs/joint-two-decoders --config configs/joint-two-decoders.json
	$(BIN)/lungseg train --data $(TRAIN_DATA) --out runs/joint-classdice --config configs/joint-two-decoders-classdice.json
	$(BIN)/lungseg orient runs/joint-classdice --data $(TRAIN_DATA)
	cp runs/joint-classdice/model_int8.onnx src/lungseg/models/infection_unet.onnx
	cp runs/joint-classdice/model_int8.json src/lungseg/models/infection_unet.json

# Score the shipped models on the held-out test splits (and the lung model on every level of the scan).
# Needs the training set: run `make train-data` (or `make model`) first.
evaluate: $(BIN)/.installed
	$(BIN)/lungseg evaluate --data $(TRAIN_DATA) --split test --scan $(SCAN) --out build/evaluation
	$(BIN)/lungseg evaluate --model src/lungseg/models/infection_unet.onnx --data $(TRAIN_DATA) --split test --scan $(SCAN) --out build/evaluation-infection

lint: $(BIN)/.installed
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy
	$(BIN)/lint-imports

# Debian's Chromium for the browser test (needs root; skipped with a reason without it).
browser:
	command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) \
		|| echo "chromium could not be installed: the browser test will be skipped"

# Everything: lint, types, import layers, and every test (CI runs this).
test: lint
	$(BIN)/pytest -m "slow or not slow"

# The developer's quick loop: the tests not marked slow (no Lightning fits, browser,
# real data or long fuzzing).
test-fast: $(BIN)/.installed
	$(BIN)/pytest

# Refresh the pictures docs/ and the README show from a fresh dataset build.
docs: dataset
	mkdir -p docs/images
	cp $(DATASET)/report/samples_train.png docs/images/dataset_samples.png
	cp $(DATASET)/report/qc_flagged.png docs/images/dataset_qc_flagged.png
	cp $(DATASET)/report/intensity_histogram.png docs/images/dataset_intensity_histogram.png
	cp $(DATASET)/report/lung_fraction.png docs/images/dataset_lung_fraction.png

# Refresh docs/ pictures of stage 2 from the run and the evaluation.
docs-model: $(BIN)/.core
	cp $(RUN)/curves.png docs/images/training_curves.png
	cp build/evaluation/best_worst_finding-lungs-ct.png docs/images/eval_best_worst_finding_lungs.png
	cp build/evaluation/best_worst_medseg-covid-98.png docs/images/eval_best_worst_medseg.png
	cp build/evaluation/dice_vs_lung_fraction.png docs/images/eval_dice_vs_lung_fraction.png
	cp build/evaluation/series_levels.png docs/images/eval_series_levels.png
	cp build/evaluation/series_area.png docs/images/eval_series_area.png
	cp build/evaluation/worst_renderings.png docs/images/eval_worst_renderings.png
	cp build/evaluation/renderings_examples.png docs/images/eval_renderings_examples.png
	cp build/evaluation/best_worst_covid19-ct-seg-clahe.png docs/images/eval_best_worst_covid19_clahe.png
	cp build/evaluation-infection/infection/infection_best_worst.png docs/images/eval_infection_best_worst.png
	cp runs/joint-two-decoders/curves.png docs/images/training_curves_infection.png
	cp $(RUN)/orientation_curves.png docs/images/training_curves_orientation.png
	$(BIN)/lungseg predict $(SCAN) $(DATA)/medseg-covid-98/images/medseg_078.png --out build/predict-example --quiet
	cp build/predict-example/Lung_Dx-A0001_overlay.png docs/images/predict_series_montage.png
	cp build/predict-example/medseg_078_overlay.png docs/images/predict_covid_slice.png

clean:
	rm -rf $(VENV) build .pytest_cache .mypy_cache .ruff_cache
