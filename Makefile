# The README's two commands, for those who prefer make. Both only need Python 3.11+.
.PHONY: run test bench
run:
	python3 dev.py run
test:
	python3 dev.py test
bench:
	.venv/bin/python -m bench.failsafe_latency
