"""The command line's parts (``train.py`` puts them together in ``KitCLI``): the ``--task`` shortcut,
the run folder and ``--ckpt_path last``, the checkpoints a run reads, ``metrics.json``, and the
subcommands beyond Lightning's (``lr_find``, ``export``, ``interpret``)."""
