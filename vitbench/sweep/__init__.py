"""Sweeps: an experiment file -> tasks (backbone x data size x seed) -> local runs or SLURM job arrays."""

from vitbench.sweep.experiment import Experiment, load_experiment, parse_experiment
from vitbench.sweep.plan import Task, TrainSize, plan_tasks

__all__ = ["Experiment", "Task", "TrainSize", "load_experiment", "parse_experiment", "plan_tasks"]
