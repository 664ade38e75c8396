"""Tests of the research code (research/): corpus builders, head training, probes."""
