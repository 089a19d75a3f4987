"""Evaluation the way the thesis's Tables 4.1, 4.3 and 4.4 do it.

- ``metrics``: the metric functions (pixels, networks, landmarks), each with stated inputs.
- ``evaluate``: pairing result files with ground truth, running a mode's metrics over the pairs, and writing
  the tables (``metrics.json``, ``metrics.md``, ``info.json``, ``per_pair.csv``).
"""
