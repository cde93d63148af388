"""Sweeps: an experiment file -> tasks (backbone x data size x seed) -> local runs or SLURM job arrays."""

from vitbench.sweep.experiment import Experiment, load_experiment, parse_experiment, plan_tasks

__all__ = ["Experiment", "load_experiment", "parse_experiment", "plan_tasks"]
