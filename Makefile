# Every README command is a target here. The venv is created on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DATA ?= ../shared/data
DATASET ?= build/dataset

.PHONY: run dataset test lint docs clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,train]'
	touch $@

# The main job. Until the web app exists (issue 5) it is the dataset build.
run: dataset

# Stage 1 on the real data: split, quality-checked training set with its report.
dataset: $(BIN)/.installed
	$(BIN)/lungseg dataset build $(DATA)/finding-lungs-ct $(DATA)/medseg-covid-98 \
		--out $(DATASET) --overwrite
	@echo "open $(DATASET)/report/report.md"

lint: $(BIN)/.installed
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy

test: lint
	$(BIN)/pytest

# Refresh the pictures docs/ and the README show from a fresh dataset build.
docs: dataset
	mkdir -p docs/images
	cp $(DATASET)/report/samples_train.png docs/images/dataset_samples.png
	cp $(DATASET)/report/qc_flagged.png docs/images/dataset_qc_flagged.png
	cp $(DATASET)/report/intensity_histogram.png docs/images/dataset_intensity_histogram.png
	cp $(DATASET)/report/lung_fraction.png docs/images/dataset_lung_fraction.png

clean:
	rm -rf $(VENV) build .pytest_cache .mypy_cache .ruff_cache
