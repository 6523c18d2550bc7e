"""save_figure: the picture is written, and a text the font cannot draw gives no warning per glyph."""

from __future__ import annotations

import warnings

from tasks.pictures import pyplot, save_figure


class Trainer:
    is_global_zero, loggers, global_step = True, [], 0

    def __init__(self, root):
        self.default_root_dir = str(root)


def test_missing_glyphs_do_not_warn(tmp_path):
    fig, ax = pyplot().subplots()
    ax.set_title("\u56d7 \u09a1 a review in other scripts")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        path = save_figure(Trainer(tmp_path), fig, "reviews")
    assert path == tmp_path / "pictures" / "reviews.png" and path.stat().st_size > 1000
