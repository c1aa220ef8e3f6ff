"""test.py --export-official: a released state dict carries no options, so the export prints (and
writes beside it) the test.py command that evaluates it to the checkpoint's numbers (issue 25)."""
import json
import shlex

import main as main_module
import test as test_module
from dataset.make_demo import make_demo_dataset


def test_following_the_printed_command_gives_the_checkpoints_numbers(tmp_path, capsys):
    demo = make_demo_dataset(tmp_path / "demo", num_train=24, num_test=12, num_class=3, feature_size=32, seed=1)
    # N = 48, not the record's 500: the option the exported file loses
    assert main_module.main(["--path-dataset", str(demo), "--num-class", "3", "--feature-size", "32",
                             "--max-seqlen", "48", "--num-exemplars", "4", "--gamma-oic", "0.3", "--device", "cpu",
                             "--max-iter", "6", "--interval", "5", "--output-dir", str(tmp_path / "runs"),
                             "--model-name", "m", "--quiet"]) == 0
    best, exported = tmp_path / "runs" / "m" / "best.pt", tmp_path / "export" / "m.pkl"
    exported.parent.mkdir()
    capsys.readouterr()
    assert test_module.main(["--pretrained-ckpt", str(best), "--export-official", str(exported),
                             "--output", str(tmp_path / "eval_best"), "--quiet"]) == 0
    out = capsys.readouterr().out
    command = out.split("evaluate it to these numbers with")[1].splitlines()[1].strip()
    assert (exported.parent / "m.pkl.txt").read_text().splitlines()[-1] == command
    argv = shlex.split(command)
    assert argv[:2] == ["python", "test.py"] and argv[2:4] == ["--pretrained-ckpt", str(exported)]
    assert "--max-seqlen" in argv and argv[argv.index("--max-seqlen") + 1] == "48"
    assert argv[argv.index("--gamma-oic") + 1] == "0.3"
    assert test_module.main([*argv[2:], "--output", str(tmp_path / "eval_exported"), "--quiet"]) == 0
    numbers = [json.loads((tmp_path / f / "metrics.json").read_text())["summary"]
               for f in ("eval_best", "eval_exported")]
    assert numbers[0] == numbers[1]
    # without the printed options (N = 500 from the record) the numbers are not the checkpoint's
    assert test_module.main(["--pretrained-ckpt", str(exported), "--path-dataset", str(demo),
                             "--output", str(tmp_path / "eval_bare"), "--quiet"]) == 0
    assert json.loads((tmp_path / "eval_bare" / "metrics.json").read_text())["summary"] != numbers[0]
