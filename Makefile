# cisis-gateway — the two commands a newcomer needs: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint bench install rabbitmq clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

rabbitmq:
	@scripts/ensure-rabbitmq.sh

## run: the gateway with its demo mailbox and DMP sandbox, fed with the bundled CI-SIS samples (Ctrl-C stops)
run: install rabbitmq
	$(BIN)/cisis-gateway run --demo

## test: lint, then the whole suite against the local RabbitMQ and PostgreSQL
test: install rabbitmq lint
	$(BIN)/pytest -q

lint: install
	$(BIN)/ruff check gateway tests bench tools
	$(BIN)/ruff format --check gateway tests bench tools

## bench: the demo flow vs a bare aio-pika relay (same run, same broker), validation speed, official schematrons,
##        MSSanté mail build+send vs a bare aiosmtplib send
bench: install rabbitmq
	$(BIN)/python bench/demo_throughput.py
	$(BIN)/python bench/validation_speed.py
	$(BIN)/python bench/official_speed.py
	$(BIN)/python bench/mssante_send.py

clean:
	rm -rf var .pytest_cache
