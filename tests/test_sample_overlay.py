"""`--task X` alone runs the built-in sample's small overlay; `--task X --data.root R` the real recipe."""

from __future__ import annotations

import pytest
import yaml

from train import CONFIG_DIR, SAMPLE_DIR, cli_main, config_chain, expand_task, root_given, task_names


def printed_config(args, capsys) -> tuple[dict, str]:
    with pytest.raises(SystemExit) as e:
        cli_main([*args, "--print_config"])
    assert e.value.code in (0, None)
    out = capsys.readouterr()
    return yaml.safe_load(out.out), out.err


def stages_of(cfg: dict) -> list[dict]:
    return next(c["init_args"]["stages"] for c in cfg["trainer"]["callbacks"] if c["class_path"].endswith("Stages"))


def same_stages(printed: list[dict], written: list[dict]) -> bool:
    """The printed stages (every field filled in) are the written ones (the fields given)."""
    return len(printed) == len(written) and all(p[k] == v for p, w in zip(printed, written) for k, v in w.items())


def recipe(name: str) -> dict:
    """The real-data recipe: the task's config chain merged the way jsonargparse does (later wins)."""
    out: dict = {}
    for p in config_chain(name):
        cfg = yaml.safe_load(p.read_text()) or {}
        for k in ("trainer", "data"):
            for kk, v in (cfg.get(k) or {}).items():
                out.setdefault(k, {})[kk] = v if kk != "init_args" else {**out.get(k, {}).get("init_args", {}), **v}
    return out


@pytest.mark.parametrize("task", ["camvid", "planet", "biwi"])
def test_sample_overlay_only_without_root(task, tmp_path, capsys):
    sample = yaml.safe_load((SAMPLE_DIR / f"{task}.yaml").read_text())
    alone, note = printed_config(["--task", task], capsys)
    assert f"configs/sample/{task}.yaml" in note  # says what it put on top
    assert alone["data"]["init_args"]["root"] is None
    assert alone["data"]["init_args"]["size"] == sample["data"]["init_args"]["size"]
    assert same_stages(stages_of(alone), sample["trainer"]["callbacks"][0]["init_args"]["stages"])

    root = tmp_path / "data"
    root.mkdir()
    real, note = printed_config(["--task", task, "--data.init_args.root", str(root)], capsys)
    assert "configs/sample" not in note
    want = recipe(task)
    assert real["data"]["init_args"]["root"] == str(root)
    assert same_stages(stages_of(real), stages_of(want))
    assert real["trainer"]["max_epochs"] == want["trainer"]["max_epochs"]
    # a real-data run never inherits the sample's toy epochs or sizes
    assert real["trainer"]["max_epochs"] > alone["trainer"]["max_epochs"]
    assert not same_stages(stages_of(real), stages_of(alone))


def test_root_in_a_user_config_counts(tmp_path):
    user = tmp_path / "mine.yaml"
    user.write_text(yaml.safe_dump({"data": {"init_args": {"root": str(tmp_path)}}}))
    assert root_given(["--config", str(user)])
    assert root_given(["--data.root", "x"]) and root_given(["--data.init_args.root=x"])
    assert not root_given(["--data.init_args.root", "null"]) and not root_given(["--trainer.max_epochs", "2"])
    args = expand_task(["--task", "camvid", "--config", str(user)])
    assert str(SAMPLE_DIR / "camvid.yaml") not in args
    assert str(SAMPLE_DIR / "camvid.yaml") in expand_task(["--task", "camvid"])


def test_sample_overlays_follow_their_config_in_the_chain():
    """An overlay task (camvid_lesson) keeps its own stages over the base task's sample overlay."""
    args = expand_task(["--task", "camvid_lesson"])
    configs = [args[i + 1] for i, a in enumerate(args) if a == "--config"]
    assert configs == [str(CONFIG_DIR / "camvid.yaml"), str(SAMPLE_DIR / "camvid.yaml"), str(CONFIG_DIR / "camvid_lesson.yaml"), str(SAMPLE_DIR / "camvid_lesson.yaml")]
    assert "sample" not in task_names()
