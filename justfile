# FlashMM jobs. `pip install rust-just` gives `just`; every recipe is a plain command.

# set up a virtualenv with everything for development
setup:
    python3 -m venv .venv && .venv/bin/pip install -q -e '.[test,train,ops,ray]' && npm ci --no-audit --no-fund

# paper trading on bundled data with the live panel
run *ARGS:
    .venv/bin/flashmm run {{ARGS}}

# the full test suite (what CI runs)
test:
    bash .ci/run

# quick tests only
test-fast:
    .venv/bin/python -m pytest -q -m "not slow"

# lint, format check and types
lint:
    .venv/bin/ruff check . && .venv/bin/ruff format --check . && .venv/bin/mypy

# format the code
fmt:
    .venv/bin/ruff format . && .venv/bin/ruff check --fix .

# benchmarks (print figures)
bench:
    .venv/bin/python benchmarks/decision_latency.py
    .venv/bin/python benchmarks/inference.py
    .venv/bin/python benchmarks/backtest_speed.py

# backtest the bundled 20 minutes of NEXO (the `backtest` profile)
backtest *ARGS:
    .venv/bin/flashmm backtest {{ARGS}}

# backtest the full NEXO day (needs the shared recordings beside the repository)
backtest-day *ARGS:
    .venv/bin/flashmm backtest --data ../shared/data/binance_spot_nexousdt_20240723.dat.gz --data ../shared/data/binance_spot_nexousdt_20240724.dat.gz {{ARGS}}
