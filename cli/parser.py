"""The command line's parser: LightningCLI's, with options spelled out in full and errors in one line.

``allow_abbrev`` is off (argparse would take ``--trainer.max_epoch 1`` as ``--trainer.max_epochs``
without a word), and a wrong option prints one line naming the closest valid one instead of
argparse's usage screen. ``train.py --help`` names ``--task`` and the tasks.
"""

from __future__ import annotations

import difflib
import re
import sys

from pytorch_lightning.cli import LightningArgumentParser

from .task_option import task_names

TASKS_HELP = ("python train.py --task NAME [options]: NAME is one of {tasks} (configs/NAME.yaml); "
              "--data.init_args.root DIR trains on your data (without it, the built-in sample); "
              "python train.py --task NAME --help lists every option of that task.")


class KitParser(LightningArgumentParser):
    """Options in full; an error is one ``error:`` line (with the closest option where one is near)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        if "description" not in kwargs:
            kwargs["description"] = TASKS_HELP.format(tasks=", ".join(task_names()))
        super().__init__(*args, **kwargs)

    def error(self, message: str, ex: Exception | None = None):
        if not self.exit_on_error:
            return super().error(message, ex)
        parser = getattr(ex, "subcommand_parser", None) or self
        line = " ".join(str(message).split())
        sys.stderr.write(f"error: {line}{closest_hint(line, parser)}\n")
        raise SystemExit(2)


def option_names(parser) -> list[str]:
    """Every ``--key`` the parser knows (its defaults' keys, nested ones dotted)."""
    try:
        keys = list(parser.get_defaults().keys())
    except Exception:  # noqa: BLE001 - a hint is optional
        return []
    return [f"--{k}" for k in keys]


# LightningCLI's options the kit replaces: where their job is done
REPLACED = {"--optimizer": "--model.init_args.optimizer", "--lr_scheduler": "the stages' one-cycle (--trainer.callbacks.init_args.stages)"}


def closest_hint(message: str, parser) -> str:
    """``"; did you mean --x?"`` for the first unknown ``--option`` the message names, where one is close."""
    wrong = re.findall(r"--[\w.\-]+", message)
    known = option_names(parser)
    for w in wrong:
        if w in known:
            continue
        if w in REPLACED:
            return f"; did you mean {REPLACED[w]}?"
        near = difflib.get_close_matches(w, known, n=1, cutoff=0.75) or [k for k in known if k.endswith("." + w[2:])][:1]
        if near:
            return f"; did you mean {near[0]}?"
    return ""
