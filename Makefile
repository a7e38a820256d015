# The README's two commands, for those who prefer make. Both only need Python 3.11+.
.PHONY: run test bench bench-quick
run:
	python3 dev.py run
test:
	python3 dev.py test
# Needs PostgreSQL (BENCH_POSTGRES_URL, default postgresql+psycopg://postgres@127.0.0.1:5432/test);
# writes bench/results/latest.{json,md}, workers-latest, ring-timing-latest and scale-out-latest
# (.json and .md). See docs/performance.md.
bench:
	.venv/bin/python -m bench.load --output bench/results/latest
	.venv/bin/python -m bench.workers --output bench/results/workers-latest
	.venv/bin/python -m bench.ring_timing --output bench/results/ring-timing-latest
	.venv/bin/python -m bench.scale_out --output bench/results/scale-out-latest
	.venv/bin/python -m bench.language_memory
	.venv/bin/python -m bench.failsafe_latency
	.venv/bin/python -m bench.cpu
	.venv/bin/python -m bench.slow_database
bench-quick:
	.venv/bin/python -m bench.load --quick
	.venv/bin/python -m bench.workers --quick
	.venv/bin/python -m bench.ring_timing --quick
	.venv/bin/python -m bench.scale_out --quick
