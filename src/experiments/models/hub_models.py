"""torch.hub models: code from a GitHub repo or a local directory with a ``hubconf.py``.

Loading runs that repository's code, so it is refused until the user sets ``model.trust_repo``.
"""

from __future__ import annotations

from typing import Any

from experiments.errors import ModelError, WeightsError
from experiments.models.core import ModelInfo, ModelSpec, Preprocessing, find_head


def build(
    repo: str,
    entrypoint: str,
    source: str = "github",
    trust_repo: bool = False,
    pretrained: bool = False,
    head: str | None = None,
    name: str | None = None,
    entrypoint_kwargs: dict[str, Any] | None = None,
) -> ModelSpec:
    """``torch.hub.load(repo, entrypoint)``, as a :class:`ModelSpec`.

    Args:
        repo: ``owner/repo[:ref]`` (source=github) or a directory holding ``hubconf.py`` (local).
        trust_repo: must be true: loading executes the repository's ``hubconf.py``.
        pretrained: passed to the entrypoint as ``pretrained=True`` (the usual hub convention).
        entrypoint_kwargs: further keyword arguments for the entrypoint.
    """
    import torch

    if source not in {"github", "local"}:
        raise ModelError(f"model.source={source!r} is invalid: choose github or local")
    if not trust_repo:
        raise ModelError(
            f"model.repo={repo!r} would run that repository's hubconf.py code. Review it, then set "
            "model.trust_repo=true to allow it"
        )
    kwargs = dict(entrypoint_kwargs or {})
    if pretrained:
        kwargs["pretrained"] = True
    try:
        net = torch.hub.load(repo, entrypoint, source=source, trust_repo=True, **kwargs)
    except OSError as err:
        where = "the local directory" if source == "local" else f"GitHub ({torch.hub.get_dir()} as cache)"
        raise WeightsError(
            f"torch.hub could not load {repo}:{entrypoint} from {where}: {err}. Offline, clone the "
            "repo and use model.source=local model.repo=DIR, or give model.weights=PATH"
        ) from err
    except (AttributeError, RuntimeError) as err:
        raise ModelError(f"model.entrypoint={entrypoint!r} failed in {repo}: {err}") from err
    if not isinstance(net, torch.nn.Module):
        raise ModelError(f"{repo}:{entrypoint} returned a {type(net).__name__}, not an nn.Module")
    head_path = head or find_head(net)
    matcher = net.group_matcher(coarse=True) if hasattr(net, "group_matcher") else None
    info = ModelInfo("hub", name or f"{repo}:{entrypoint}", weights=f"hub:{repo}" if pretrained else "random")
    return ModelSpec(net, head_path, matcher, Preprocessing(in_chans=3), info)
