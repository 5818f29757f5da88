"""Benchmarks a student can trust and compare (MISSION E2, E3).

payload.py / payload_ddp.py run on the box; suite.py runs them and stores results;
compare.py turns results into cost per unit of work; fleet.py measures several
instance types in one go; scale.py measures data-parallel scaling; peaks.py is the
table of datasheet peaks.
"""
