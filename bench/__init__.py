"""The study and the benchmarks of clear_native, on its public API.

Run as scripts (``python bench/run.py``) or as modules (``python -m bench.run``);
each writes JSON and markdown under results/.
"""
