"""Seeing an adaptation: where the source and target test images land in the feature space.

At the end of testing a domain-adaptation run, :class:`DomainFeatures` passes (up to
``max_samples`` of) each domain's test images through the evaluated network's backbone and logs

* ``test/proxy_a_distance``: ``2 (1 - 2 err)`` of a logistic regression telling the domains apart
  from the features, fitted on one half and scored on the other (0: the domains are
  indistinguishable, 2: perfectly separable; Ben-David et al. 2007);
* ``test/features`` (TensorBoard image): the features projected on their two principal components,
  coloured by domain and, beside it, by class: whether the domains were aligned and whether the
  classes stayed apart.

Other runs (one data set) are left alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning as L
import numpy as np
import torch
from matplotlib.figure import Figure

from experiments.reporting.sinks import log_figures, takes_figures

FEATURES_TAG = "test/features"


def proxy_a_distance(source: np.ndarray, target: np.ndarray, seed: int = 0) -> float:
    """``2 (1 - 2 err)`` (clipped to [0, 2]) of a linear domain classifier on held-out halves."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    x = np.concatenate([source, target])
    y = np.concatenate([np.zeros(len(source)), np.ones(len(target))])
    order = np.random.default_rng(seed).permutation(len(x))
    half = len(x) // 2
    fit, score = order[:half], order[half:]
    scaler = StandardScaler().fit(x[fit])
    classifier = LogisticRegression(max_iter=1000).fit(scaler.transform(x[fit]), y[fit])
    error = 1.0 - classifier.score(scaler.transform(x[score]), y[score])
    return float(np.clip(2.0 * (1.0 - 2.0 * error), 0.0, 2.0))


def embedding_figure(points: np.ndarray, domains: np.ndarray, labels: np.ndarray, domain_names: Sequence[str],
                     class_names: Sequence[str], title: str = "") -> Figure:
    """Two scatter panels of 2-D ``points`` ``(N, 2)``: coloured by domain, then by class."""
    fig = Figure(figsize=(10, 4.6))
    by_domain, by_class = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    for d, name in enumerate(domain_names):
        mine = domains == d
        by_domain.scatter(points[mine, 0], points[mine, 1], s=4, alpha=0.5, label=name)
    by_domain.legend(markerscale=3, fontsize=8)
    by_domain.set_title("by domain", fontsize=9)
    colours = by_class.scatter(points[:, 0], points[:, 1], s=4, alpha=0.6, c=labels, cmap="tab10",
                               vmin=-0.5, vmax=max(len(class_names), 10) - 0.5)
    markers = ["o", "x"]
    for d in range(len(domain_names)):  # the same points again, outlined by domain
        mine = domains == d
        by_class.scatter(points[mine, 0], points[mine, 1], s=1, c="k", marker=markers[d % 2], alpha=0.15)
    fig.colorbar(colours, ax=by_class, ticks=range(len(class_names))).ax.set_yticklabels(class_names, fontsize=7)
    by_class.set_title("by class", fontsize=9)
    for ax in (by_domain, by_class):
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


@torch.no_grad()
def domain_features(module: L.LightningModule, datamodule: Any, max_samples: int = 1000) -> dict[str, Any]:
    """Features ``(N, F)``, domain index and label of up to ``max_samples`` test images per domain
    (in loader order), from the module's evaluated network; the 2-D PCA projection; the proxy
    A-distance. Returns ``{"points", "domains", "labels", "pad", "names"}``."""
    network = module.evaluated_model()
    feats, domains, labels = [], [], []
    names = list(getattr(datamodule, "test_loader_names", ["source", "target"]))
    for d, loader in enumerate(datamodule.test_dataloader()):
        seen = 0
        for x, y in loader:
            x = module.to_layout(x.to(module.device))
            feats.append(network.forward_features(x).float().flatten(1).cpu())
            labels.append(y.cpu())
            domains.append(torch.full((len(y),), d))
            seen += len(y)
            if seen >= max_samples:
                break
    features, domains_t, labels_t = torch.cat(feats), torch.cat(domains), torch.cat(labels)
    centred = features - features.mean(dim=0)
    _, _, v = torch.pca_lowrank(centred, q=2, center=False)
    points = (centred @ v[:, :2]).numpy()
    pad = float("nan")
    if len(names) == 2:
        pad = proxy_a_distance(features[domains_t == 0].numpy(), features[domains_t == 1].numpy())
    return {"points": points, "domains": domains_t.numpy(), "labels": labels_t.numpy(), "pad": pad, "names": names}


class DomainFeatures(L.Callback):
    """Logs ``test/proxy_a_distance`` and the ``test/features`` picture of a domain-adaptation
    run's test (see the module docstring); ``max_samples`` test images per domain at most."""

    def __init__(self, max_samples: int = 1000) -> None:
        self.max_samples = max_samples

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        datamodule = trainer.datamodule
        if not hasattr(pl_module, "evaluated_model") or len(getattr(datamodule, "test_loader_names", ())) != 2:
            return
        found = domain_features(pl_module, datamodule, self.max_samples)
        pl_module.log("test/proxy_a_distance", found["pad"])
        if takes_figures(trainer):
            method = getattr(getattr(pl_module, "adapt", None), "name", "")
            figure = embedding_figure(found["points"], found["domains"], found["labels"], found["names"],
                                      datamodule.class_names(),
                                      f"{method}: test features (PCA), proxy A-distance {found['pad']:.2f}")
            log_figures(trainer, {FEATURES_TAG: figure})
