"""Aegis training: Flower federated learning as Ray jobs, under a carbon-aware job submitter.

Entry points: `python -m training.fl_job`, `python -m training.centralized`,
`python -m training.submit`. Import-light: Ray, Flower and torch load only where used.
"""

__all__ = ["carbon"]
