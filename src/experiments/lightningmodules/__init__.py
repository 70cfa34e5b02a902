"""LightningModules: the science of a run (loss, metrics, optimizer groups)."""
