"""Bad input a review found, each refused with one line ``vitbench: error: <problem>: <fix>``, exit 2,
no traceback, nothing written: ``vitbench backbones`` sizes and presets no model can take, plugins that
exit at import, abbreviated flags; and a resumed run dir spelled otherwise is the same run dir.
Every case runs the real CLI (``vitbench.cli.main``) in this process.
"""

from __future__ import annotations

import pytest

from vitbench.cli import main

# ------------------------------------------------------------------ backbones: what no model can take

BACKBONES_CASES = [
    # Weights and buffers counted on the meta device: refused before gigabytes are allocated (or the OOM killer).
    (["--image-size", "1000000", "--preset", "micro"], ["at 1000000 px needs about", "use a smaller --image-size"]),
    (["--in-chans", "2"], ["--in-chans must be 1 or 3, got 2", "pass --in-chans 1"]),
    (["--in-chans", "0"], ["--in-chans must be 1 or 3, got 0"]),
    (["--num-classes", "0"], ["--num-classes must be between 1 and 1,000,000, got 0", "pass the number of classes"]),
    (["--num-classes", "10000000000"], ["--num-classes must be between 1 and 1,000,000"]),
    (["--preset", "huge"], ["--preset huge: no backbone has such a preset", "pass one of micro"]),
    (["--preset", "micro", "--preset", "hueg"], ["--preset hueg: no backbone has such a preset"]),
    # abbreviations are refused in every subcommand, with the full flag suggested
    (["--image", "32"], ["unrecognized arguments --image 32", "did you mean --image-size?"]),
]


def _id(v):
    return " ".join(v)[:40] if isinstance(v, list) else None


@pytest.mark.parametrize("args,expect", BACKBONES_CASES, ids=_id)
def test_backbones_refuses(args, expect, refused):
    refused("backbones", *args, expect=expect)


USAGE_CASES = [
    (["train", "--max-ste", "3"], ["unrecognized arguments --max-ste 3", "did you mean --max-steps?"]),
    (["train", "--max-ste=3"], ["did you mean --max-steps?"]),
    (["sweep", "plan", "x", "--est"], ["unrecognized arguments --est"]),
]


@pytest.mark.parametrize("args,expect", USAGE_CASES, ids=_id)
def test_an_abbreviated_flag_is_refused(args, expect, refused):
    refused(*args, expect=expect)


# A module that exits at import would end vitbench with its status and no word; it is a plugin that does not import.
PLUGIN_BODIES = {
    "SystemExit(3)": "raise SystemExit(3)\n",
    "sys.exit('msg')": "import sys\nsys.exit('no main here')\n",
    "GeneratorExit": "raise GeneratorExit\n",
}


@pytest.mark.parametrize("body", PLUGIN_BODIES.values(), ids=PLUGIN_BODIES.keys())
def test_a_plugin_that_exits_at_import_is_one_line(body, refused, tmp_path_factory):
    # Outside refused.dir: importing it may write __pycache__ next to it.
    plugin = tmp_path_factory.mktemp("plugins") / "exits_plugin.py"
    plugin.write_text(body)
    refused("backbones", "--plugin", plugin, expect=[f"plugin '{plugin}' does not import",
                                                     "fix the module or the --plugin path"])


# ------------------------------------------------ train: the run dir spelled otherwise is the same run dir

@pytest.mark.parametrize("spelling", ["./run", "run/", "ABSOLUTE"])
def test_resuming_names_only_the_keys_that_differ_whatever_the_spelling_of_out(spelling, refused,
                                                                            tiny_fashion_mnist, capfd):
    import yaml

    work = refused.dir / "work"
    args = ["train", "--dataset", tiny_fashion_mnist, "--max-steps", "2", "--batch-size", "64", "--wandb", "disabled",
            "--accelerator", "cpu"]
    assert main([*args, "--out", "run", "--print-config"]) == 0
    saved = yaml.safe_load(capfd.readouterr().out)
    assert saved["out"] == "run"
    saved["model"]["image_size"] = 28  # what the run resolves from the data
    saved["optim"]["lr"] = 0.002
    (work / "run").mkdir()
    (work / "run" / "config.yaml").write_text(yaml.safe_dump(saved))
    out = str(work / "run") if spelling == "ABSOLUTE" else spelling
    # Only the lr differs: out names the same folder, so it is not a difference (it was: "out: run vs ./run").
    line = refused(*args, "--out", out, "--lr", "0.001", expect=["optim.lr: 0.002 in the run dir, 0.001 now"])
    assert "out:" not in line, line
