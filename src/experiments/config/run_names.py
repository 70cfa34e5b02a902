"""What a command's folder is called, so that a folder says what it holds.

``hydra.run.dir`` is ``${run_dir:...}`` (conf/hydra/default.yaml), decided here once:

- ``mode=train``: ``<output root>/runs/<time>_<model>_<finetune>``, named by the options typed
  (``model=efficientnet_lite0``, not the timm name ``tf_efficientnet_lite0``); a ``model.name=``
  on the command line joins the option (``timm-convnext_nano``). Only training runs live in
  ``runs/``, so ``tensorboard --logdir outputs`` lists training runs;
- ``mode=test``, ``predict``, ``export`` of a checkpoint inside a run: under that run,
  ``<run>/<mode>/<time>``; of any other checkpoint file (or a run folder this user cannot write):
  ``<output root>/<mode>/<time>_<run or file name>``;
- ``mode=advise``: ``<output root>/advise/<time>_<model>_<finetune>``; ``mode=env`` and
  ``mode=models`` write nothing (:func:`experiments.pipeline.rundirs.discard_unused_run_dir`).

Light: the standard library only (Hydra resolves this while it starts).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

#: the modes that evaluate or convert a checkpoint: their folders go with the checkpoint's run
CHECKPOINT_MODES = ("test", "predict", "export")

_UNSAFE = re.compile(r"[^A-Za-z0-9._=+-]+")


def safe_name(text: str) -> str:
    """``text`` as one folder name: anything but letters, digits and ``._=+-`` becomes ``-``
    (``*lite0*`` -> ``lite0``, ``hf-hub:org/repo`` -> ``hf-hub-org-repo``)."""
    return _UNSAFE.sub("-", str(text)).strip("-") or "x"


def option_label(choice: str | None, key: str, overrides: Sequence[str]) -> str:
    """The option the user typed for a group (``efficientnet_lite0``), with the ``<key>.name`` the
    command line gave it, if any (``model=timm model.name=convnext_nano`` -> ``timm-convnext_nano``)."""
    label = str(choice or key)
    names = [str(o).split("=", 1)[1] for o in overrides if str(o).lstrip("+").split("=", 1)[0] == f"{key}.name"]
    return safe_name(f"{label}-{names[-1]}" if names else label)


def run_label(model_choice: str | None, finetune_choice: str | None, overrides: Sequence[str]) -> str:
    """``<model>_<finetune>`` by the options typed: the name of a run, or of a sweep job that varies nothing."""
    return f"{option_label(model_choice, 'model', overrides)}_{option_label(finetune_choice, 'finetune', overrides)}"


def checkpoint_run(ckpt_path: str | os.PathLike) -> Path | None:
    """The run folder that holds ``ckpt_path`` (``<run>/checkpoints/<name>.ckpt`` beside
    ``<run>/.hydra/config.yaml``); None for a checkpoint file outside a run."""
    ckpt = Path(ckpt_path).expanduser()
    run = ckpt.resolve().parent.parent if ckpt.parent.name == "checkpoints" else None
    return run if run is not None and (run / ".hydra" / "config.yaml").is_file() else None


def run_dir(output_root: str, mode: str, ckpt_path: str | None, model_choice: str | None,
            finetune_choice: str | None, overrides: Sequence[str], now: str) -> str:
    """The folder of a command (the rules are in the module's docstring)."""
    overrides = list(overrides or [])
    if mode in CHECKPOINT_MODES and ckpt_path:
        run = checkpoint_run(ckpt_path)
        if run is not None and os.access(run, os.W_OK | os.X_OK):
            return str(run / mode / now)
        source = run.name if run is not None else Path(str(ckpt_path)).stem
        return str(Path(output_root) / mode / f"{now}_{safe_name(source)}")
    label = run_label(model_choice, finetune_choice, overrides)
    return str(Path(output_root) / ("runs" if mode == "train" else safe_name(mode)) / f"{now}_{label}")
