"""Config checks that run before torch, Lightning, timm or torchvision are imported.

A typo or a bad value answers in well under a second with a message naming the key, the value and
what is allowed. Only omegaconf is used here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from experiments.config.domains import DOMAINS
from experiments.errors import ConfigError
from experiments.config.arguments import is_integer, is_number, unknown_argument
from experiments.config.declared import problem, problems_of
from experiments.config.library_keys import library_keys

#: every ``mode=``; experiments.pipeline.tasks.TASKS holds one function for each (a test checks they agree)
MODES = ("train", "test", "predict", "export", "advise", "env", "models")
#: mode=export's formats (experiments.export)
EXPORT_FORMATS = ("onnx", "torchscript", "safetensors")
#: the halves of an embedded data set for domain-shift experiments (data.partition)
PARTITIONS = ("all", "source", "target")


def _distinct_classes(value: Any) -> bool:
    """A non-empty list of distinct class indices >= 0 (digits, image sets) or of distinct class
    names (text labels: ``data.classes=[neg,pos]``)."""
    items = list(value) if isinstance(value, (list, tuple, ListConfig)) else None
    if not items or len(set(items)) != len(items):
        return False
    return all(_int(i) and i >= 0 for i in items) or all(isinstance(i, str) and i.strip() for i in items)


PRECISIONS = ("32-true", "32", "16-mixed", "bf16-mixed", "bf16-true", "16-true", "64-true", "64", "transformer-engine")


_int, _num = is_integer, is_number
#: words YAML 1.1 and people read as booleans but Hydra passes as strings: never a name
_BOOL_WORDS = {"on", "off", "yes", "no", "y", "n", "true", "false", "t", "f", "0", "1"}


# (key, predicate, what is allowed). A missing key is skipped: not every option has every key.
_Rule = tuple[str, Callable[[Any], bool], str]
_RULES: list[_Rule] = [
    ("mode", lambda v: v in MODES, f"one of {', '.join(MODES)}"),
    ("seed", lambda v: _int(v), "an integer"),
    ("checkpoint.background", lambda v: isinstance(v, bool), "true or false"),
    ("checkpoint.reference_frozen", lambda v: isinstance(v, bool), "true or false"),
    ("overwrite", lambda v: isinstance(v, bool), "true or false"),
    ("publish", lambda v: v is None or (isinstance(v, str) and v.strip() != ""), "null or a path"),
    ("callbacks.last_checkpoint.every_n_epochs", lambda v: _int(v) and v >= 1, "an integer >= 1"),
    ("data.train_fraction", lambda v: _num(v) and 0 < v <= 1, "a number in (0, 1]"),
    ("data.samples_per_class", lambda v: v is None or (_int(v) and v >= 1), "null or an integer >= 1"),
    ("data.partition", lambda v: v in PARTITIONS, f"one of {', '.join(PARTITIONS)}"),
    ("data.classes", lambda v: v is None or _distinct_classes(v),
     "null or a non-empty list of distinct class indices >= 0 or of distinct class names"),
    *((f"data.{key}", lambda v: _int(v) and v >= 1, "an integer >= 1")
      for key in ("patches_per_digit", "eval_patches_per_digit")),
    *((f"data.{flag}", lambda v: isinstance(v, bool), "true or false")
      for flag in ("download",)),
    ("data.num_classes", lambda v: v is None or (_int(v) and v >= 1), "null or an integer >= 1"),
    ("data.channels", lambda v: v in (1, 3), "1 (grey) or 3 (RGB)"),
    ("data.sparse_format", lambda v: v in ("coo", "csr", "csc", "dense"), "one of coo, csr, csc, dense"),
    ("data.n_features", lambda v: v is None or (_int(v) and v >= 1), "null or an integer >= 1"),
    ("data.features", lambda v: v in ("tokens", "tfidf"), "tokens or tfidf"),
    ("data.max_length", lambda v: _int(v) and v >= 2, "an integer >= 2"),
    ("optimizer.lr", lambda v: _num(v) and v > 0, "a number > 0"),
    ("optimizer.weight_decay", lambda v: _num(v) and v >= 0, "a number >= 0"),
    ("trainer.max_epochs", lambda v: _int(v) and v >= 1, "an integer >= 1"),
    ("train_steps", lambda v: v is None or (_int(v) and v >= 1), "null or an integer >= 1 (optimizer steps)"),
    ("data.image_size", lambda v: v is None or v == "model" or (_int(v) and v >= 1) or (
        isinstance(v, ListConfig) and len(v) == 2 and all(_int(x) and x >= 1 for x in v)),
     "null, model, an integer >= 1 or [H, W]"),
    ("trainer.devices", lambda v: v == "auto" or (_int(v) and (v >= 1 or v == -1)) or (
        isinstance(v, ListConfig) and len(v) > 0 and all(_int(x) and x >= 0 for x in v)),
     "auto, a count >= 1, -1 (every device) or a list of device indices such as [0, 1]"),
    ("trainer.precision", lambda v: str(v) in PRECISIONS, f"one of {', '.join(PRECISIONS)}"),
    ("scheduler.step_size", lambda v: _int(v) and v >= 1, "an integer >= 1"),
    ("scheduler.T_max", lambda v: _int(v) and v >= 1, "an integer >= 1"),
    # booleans are booleans: `module.compile=off` must not turn compilation on (bool("off") is True)
    *((key, lambda v: isinstance(v, bool), "true or false") for key in ("module.compile", "module.channels_last", "module.no_decay_1d")),
    ("model.pretrained", lambda v: isinstance(v, bool) or (isinstance(v, str) and v.strip() != "" and v.lower() not in _BOOL_WORDS),
     "true, false or a weights entry name (IMAGENET1K_V1)"),
    *((key, lambda v: isinstance(v, bool), "true or false") for key in (
        "model.offline", "logger.mlflow.log_best_checkpoint", "data.allow_unlabelled",
        *(f"data.tfidf.{k}" for k in ("sublinear_tf", "lowercase", "binary", "use_idf", "smooth_idf")))),
    ("predict.inputs", lambda v: v is None or (isinstance(v, str) and v.strip() != ""), "null (the test split) or a path or glob"),
    ("predict.top_k", lambda v: _int(v) and v >= 1, "an integer >= 1"),
    ("predict.grid", lambda v: _int(v) and v >= 0, "an integer >= 0 (images in the picture grid; 0: none)"),
    ("export.format", lambda v: v in EXPORT_FORMATS, f"one of {', '.join(EXPORT_FORMATS)}"),
    ("export.tolerance", lambda v: _num(v) and v > 0, "a number > 0 (the largest logit difference allowed)"),
    ("export.check_batches", lambda v: _int(v) and v >= 1, "an integer >= 1"),
    ("export.opset", lambda v: _int(v) and v >= 7, "an integer >= 7"),
]


def rule_problem(key: str, value: Any) -> str | None:
    """The message for ``key=value`` when it breaks its rule in the table (None: no rule or fine):
    for the checks that run before the whole config is validated (a Hydra callback's)."""
    for rule_key, ok, allowed in _RULES:
        if rule_key == key and not ok(value):
            return f"{key}={value!r} is invalid: expected {allowed}"
    return None


def _select(cfg: DictConfig, key: str) -> tuple[bool, Any]:
    missing = object()
    value = OmegaConf.select(cfg, key, default=missing, throw_on_missing=False)
    return value is not missing, value


def missing_keys(cfg: DictConfig) -> list[str]:
    """Dotted keys whose value is ``???`` (mandatory, not given), without resolving anything."""
    found: list[str] = []

    def walk(node: Any, prefix: str) -> None:
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        for key, value in items:
            if value == "???":
                found.append(f"{prefix}{key}")
            else:
                walk(value, f"{prefix}{key}.")

    walk(OmegaConf.to_container(cfg, resolve=False, throw_on_missing=False), "")
    return found


def _keys_of(key: str) -> list[str]:
    """``key``, and for a ``data.*`` rule the same key under each domain of a pair (its nested
    data options are checked like a plain one)."""
    if not key.startswith("data."):
        return [key]
    return [key, *(f"data.{domain}.{key[5:]}" for domain in DOMAINS)]


def validate(cfg: DictConfig) -> None:
    """Raise ConfigError for the first value that breaks a rule; cheap, no heavy imports."""
    problems = _missing_distributions(cfg)  # first: no other value matters while the data is not there
    problems += [f"{key} is required: set it on the command line ({key}=...)" for key in missing_keys(cfg)]
    for rule_key, ok, allowed in _RULES:
        for key in _keys_of(rule_key):
            present, value = _select(cfg, key)
            if present and not ok(value):
                problems.append(f"{key}={value!r} is invalid: expected {allowed}")
    problems += declared_problems(cfg)
    problems += _combination_problems(cfg)
    val, test = (OmegaConf.select(cfg, f"data.{k}_fraction", default=None) for k in ("val", "test"))
    if not problems and _num(val) and _num(test) and val + test >= 1:
        problems.append(f"data.val_fraction={val} + data.test_fraction={test} leave no training data: "
                        "keep their sum under 1 (e.g. 0.15 + 0.15)")
    problems += _missing_extras(cfg)
    if not problems and OmegaConf.select(cfg, "finetune._target_", default=None):
        problems += _strategy_problems(cfg)
    if problems:
        raise ConfigError("; ".join(problems))


#: the config sections whose option nodes (``_target_``) may declare their keys' rules, and the
#: packages whose classes declare none (their sources are not read; the keys of the ones options
#: use are in :mod:`experiments.config.library_keys`)
DECLARING_SECTIONS = ("data", "model", "finetune", "adapt", "optimizer", "scheduler", "module", "trainer",
                      "callbacks", "logger")
UNDECLARED_PACKAGES = ("torch", "torchvision", "lightning", "timm", "transformers")


def declared_problems(cfg: DictConfig) -> list[str]:
    """Values that break a rule their option's class declares (:mod:`experiments.config.declared`),
    for every node with a ``_target_`` under :data:`DECLARING_SECTIONS` (a domain pair's
    ``data.source`` and ``data.target`` and the augmentation ``data.device_augment`` included)."""
    found: list[str] = []

    def walk(node: Any, key: str) -> None:
        if not isinstance(node, DictConfig):
            return
        target = node.get("_target_") if "_target_" in node else None
        if isinstance(target, str) and (rules := library_keys(target)) is not None:
            found.extend(p for k, rule in rules.items() if k in node and (p := problem(f"{key}.{k}", rule, node[k])))
        elif isinstance(target, str) and target.split(".")[0] not in UNDECLARED_PACKAGES:
            found.extend(problems_of(key, node))
        if "_partial_" in node and not isinstance(node.get("_partial_"), bool):
            found.append(f"{key}._partial_={node.get('_partial_')!r} is invalid: expected true or false")
        for child in node:
            if not str(child).startswith("_") and isinstance(node._get_node(child), DictConfig):
                walk(node[child], f"{key}.{child}")

    for section in DECLARING_SECTIONS:
        if section in cfg:
            walk(cfg[section], section)
    return found


def _combination_problems(cfg: DictConfig) -> list[str]:
    """Options that are each valid but do not go together, said with the fix."""
    problems = []
    augment = OmegaConf.select(cfg, "data.device_augment", default=None)
    if isinstance(augment, DictConfig) and "_target_" not in augment:
        problems.append(
            f"data.device_augment={OmegaConf.to_container(augment)} sets keys of an augmentation that is not "
            "chosen: add augment=digits or augment=natural (conf/augment/), whose keys these then change "
            f"(e.g. augment=digits data.device_augment.{next(iter(augment), 'degrees')}=...)"
        )
    if cfg.get("mode") == "advise" and cfg.get("ckpt_path"):
        problems.append(
            f"mode=advise analyses weights, not a training checkpoint: ckpt_path={cfg.ckpt_path} would be "
            f"ignored; give it as model.weights={cfg.ckpt_path} (and drop ckpt_path=)"
        )
    return problems


#: (what the config asks for, the modules it needs, the pyproject extra that installs them)
_EXTRAS: list[tuple[str, Callable[[DictConfig], bool], tuple[str, ...], str]] = [
    ("logger=mlflow", lambda cfg: bool(OmegaConf.select(cfg, "logger.mlflow", default=None)), ("mlflow",), "tracking"),
    ("finetune=lora", lambda cfg: str(OmegaConf.select(cfg, "finetune._target_", default="")).endswith(".Lora"),
     ("peft",), "adapters"),
    ("mode=export export.format=onnx",
     lambda cfg: cfg.get("mode") == "export" and OmegaConf.select(cfg, "export.format", default=None) == "onnx",
     ("onnx", "onnxruntime"), "export"),
]


def _importable(module: str) -> bool:
    import importlib.util
    import sys

    if module in sys.modules:
        return sys.modules[module] is not None
    return importlib.util.find_spec(module) is not None


def _missing_extras(cfg: DictConfig) -> list[str]:
    """An optional feature asked for without its packages: one line naming the extra to install."""
    problems = []
    for asked, applies, modules, extra in _EXTRAS:
        missing = [m for m in modules if not _importable(m)] if applies(cfg) else []
        if missing:
            problems.append(f"{asked} needs {', '.join(missing)}, which is not installed: "
                            f"pip install -e \".[{extra}]\" (or pip install {' '.join(missing)})")
    return problems


def _missing_distributions(cfg: DictConfig) -> list[str]:
    """A data option that reads its files from a Python distribution that is not installed."""
    from experiments.config.installed_files import locate, not_installed_message

    problems = []
    for key in _keys_of("data.distribution"):
        present, distribution = _select(cfg, key)
        if present and isinstance(distribution, str) and distribution and locate(distribution, ".") is None:
            name = OmegaConf.select(cfg, key.rsplit(".", 1)[0] + ".name", default=None) or distribution
            problems.append(not_installed_message(distribution, name))
    return problems


def _strategy_problems(cfg: DictConfig) -> list[str]:
    """The fine-tuning strategy checks its own keys (strategies import no torch, so this is cheap)."""
    from hydra.utils import instantiate

    from experiments.errors import FinetuneError

    unknown = unknown_argument("finetune", cfg.finetune)
    if unknown:
        return [unknown]
    # with a step budget the epochs are known once the data is: epoch-dependent checks wait for it
    max_epochs = cfg.trainer.max_epochs if cfg.get("train_steps") is None else 10**6
    try:
        instantiate(cfg.finetune).validate(max_epochs)
    except FinetuneError as err:
        return [str(err)]
    return []
