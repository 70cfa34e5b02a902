"""What a run or a sweep shows when it is over: TensorBoard figures and hyperparameters, predictions
files, the sweep summary. Each module holds one report; none is imported by config composition
except :mod:`sweep_summary`, which stays light (Hydra imports it at start-up).
"""
