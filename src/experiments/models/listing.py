"""List the models each family offers, with a shell-style filter.

    python -m experiments.models.listing timm '*convnext*'
    python run.py mode=models model=timm model.name='*convnext*'
"""

from __future__ import annotations

import argparse
from pathlib import Path

from experiments.models.naming import filter_names

FAMILIES = ("custom", "torchvision", "timm", "hub")
CONF_MODEL = Path(__file__).resolve().parents[3] / "conf" / "model"


def model_names(family: str, pattern: str | None = None, pretrained_only: bool = False) -> list[str]:
    """Model names of ``family`` matching ``pattern`` (``*`` wildcards; a bare word matches inside)."""
    if family == "torchvision":
        from experiments.models.torchvision_models import classification_models

        names = classification_models()
    elif family == "timm":
        import timm

        names = timm.list_models(pretrained=pretrained_only)
    elif family == "custom":
        names = ["experiments.models.custom.SmallCNN", "experiments.models.custom.EncoderDecoderClassifier"]
        names += [f"model={p.stem}" for p in sorted(CONF_MODEL.glob("*.yaml"))] if CONF_MODEL.is_dir() else []
    elif family == "hub":
        return []  # a hub repo lists its own entrypoints: torch.hub.list(repo) (needs trust and network)
    else:
        raise ValueError(f"family {family!r}: choose one of {', '.join(FAMILIES)}")
    return filter_names(names, pattern)


def family_of(model_cfg) -> str:
    target = str(model_cfg.get("_target_", ""))
    for family in ("torchvision", "timm", "hub"):
        if f".{family}_models." in target:
            return family
    return "custom"


def print_models(cfg) -> int:
    """``mode=models``: print the models of the configured family matching ``model.name``."""
    family = family_of(cfg.model)
    pattern = cfg.model.get("name") if any(ch in str(cfg.model.get("name", "")) for ch in "*?[") else None
    if family == "hub":
        return _print_hub(cfg.model)
    names = model_names(family, pattern)
    for name in names:
        print(name)
    print(f"{len(names)} {family} models" + (f" matching {pattern!r}" if pattern else ""))
    return len(names)


def _print_hub(model_cfg) -> int:
    import torch

    if not model_cfg.get("trust_repo"):
        print(f"torch.hub.list({model_cfg.repo!r}) runs the repo's hubconf.py: set model.trust_repo=true")
        return 0
    names = torch.hub.list(model_cfg.repo, source=model_cfg.get("source", "github"), trust_repo=True)
    for name in names:
        print(name)
    return len(names)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="List available models per family.")
    parser.add_argument("family", choices=FAMILIES[:3])
    parser.add_argument("pattern", nargs="?", default=None, help="shell-style filter, e.g. '*convnext*'")
    parser.add_argument("--pretrained", action="store_true", help="timm: only names with pretrained weights")
    args = parser.parse_args(argv)
    names = model_names(args.family, args.pattern, args.pretrained)
    print("\n".join(names))
    print(f"{len(names)} {args.family} models")


if __name__ == "__main__":
    main()
