"""The released-compatibility flags: parsed, in their own help group, and read by nothing."""
import re

import pytest
from pathlib import Path

from options import build_parser, parse_args

REPO = Path(__file__).resolve().parents[1]
RELEASED = {"dataset": "AntSampleDataset", "AWM": "BWA_fusion_dropout_feat_v2", "scale": 0.64}


def test_released_flags_have_their_own_help_group_marked_ignored():
    groups = {g.title: g for g in build_parser()._action_groups}
    group = groups["released command lines"]
    assert "IGNORED" in group.description
    assert {a.dest for a in group._group_actions} == set(RELEASED)
    assert all(not set(RELEASED) & {a.dest for a in g._group_actions} for t, g in groups.items() if t != group.title)


def test_released_flags_are_accepted_and_change_no_other_option():
    plain = vars(parse_args([]))
    given = vars(parse_args(["--dataset", "AntSampleDataset", "--AWM", "BWA_fusion_dropout_feat_v2",
                             "--scale", "0.64"]))
    others = set(plain) - set(RELEASED)
    assert {k: given[k] for k in others} == {k: plain[k] for k in others}
    assert {k: given[k] for k in RELEASED} == RELEASED


def test_no_code_reads_the_released_flags():
    product = [*REPO.glob("*.py"), *(REPO / "utils").glob("*.py")]
    readers = [f"{p.name}: args.{flag}" for p in product for flag in RELEASED
               if re.search(rf"\bargs\.{flag}\b", p.read_text())]
    assert not readers, f"an option marked ignored is read; move it out of the released group: {readers}"


# ----------------------------------------------------------------------------- one parser per command

def _commands():
    import convert_features
    import extract_features
    import import_annotations
    import localize
    import main
    import sweep
    import test
    from utils import plots, visualize

    return {"main.py": main.main, "test.py": test.main, "localize.py": localize.main, "sweep.py": sweep.main,
            "extract_features.py": extract_features.main, "import_annotations.py": import_annotations.main,
            "convert_features.py": convert_features.main, "utils.visualize": visualize.main, "utils.plots": plots.main}


#: Per command, flags another command has and this one does not use, with the arguments it needs besides.
UNUSED = [
    ("main.py", [], ["--output", "out"]),  # not taken for --output-dir: no abbreviations
    ("main.py", [], ["--save-cas", "cas"]), ("main.py", [], ["--visualize", "2"]),
    ("main.py", [], ["--from-cas", "cas"]), ("main.py", [], ["--extract-batch-size", "2"]),
    ("test.py", ["--pretrained-ckpt", "x.pt"], ["--lr", "9"]),
    ("test.py", ["--pretrained-ckpt", "x.pt"], ["--seeds", "1,2"]),
    ("test.py", ["--pretrained-ckpt", "x.pt"], ["--batch-size", "4"]),
    ("test.py", ["--pretrained-ckpt", "x.pt"], ["--num-similar", "3"]),
    ("test.py", ["--pretrained-ckpt", "x.pt"], ["--select-on", "holdout"]),
    ("test.py", ["--pretrained-ckpt", "x.pt"], ["--model-name", "x"]),
    ("localize.py", ["--pretrained-ckpt", "x.pt", "a.npy"], ["--batch-size", "4"]),
    ("localize.py", ["--pretrained-ckpt", "x.pt", "a.npy"], ["--visualize"]),
    ("localize.py", ["--pretrained-ckpt", "x.pt", "a.npy"], ["--max-iter", "5"]),
    ("sweep.py", ["--grid", "lr=1e-4"], ["--output", "out"]),  # a flag passed on to main.py, which has none
    ("extract_features.py", ["v.mp4", "--out", "o", "--name", "n"], ["--batch-size", "8"]),
    ("extract_features.py", ["v.mp4", "--out", "o", "--name", "n"], ["--size", "32"]),
    ("extract_features.py", ["v.mp4", "--out", "o", "--name", "n"], ["--lr", "1"]),
    ("import_annotations.py", ["a.json", "--out", "o", "--name", "n"], ["--device", "cpu"]),
    ("convert_features.py", [], ["--feature-size", "64"]),
    ("utils.visualize", ["--from-cas", "c", "--video", "v"], ["--visualize", "1"]),
    ("utils.plots", ["runs/x"], ["--device", "cpu"]),
]


@pytest.mark.parametrize("command, needed, flag", UNUSED, ids=[f"{c} {f[0]}" for c, _, f in UNUSED])
def test_every_command_refuses_a_flag_it_does_not_use(command, needed, flag, capsys):
    with pytest.raises(SystemExit) as exit_:
        _commands()[command]([*needed, *flag])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "unrecognized arguments" in err and flag[0] in err and "Traceback" not in err


def _flags(parser):
    return {s for a in parser._actions for s in a.option_strings}


def test_help_lists_only_the_commands_own_flags():
    from options import build_localize_parser, build_test_parser

    train, test, localize = _flags(build_parser()), _flags(build_test_parser()), _flags(build_localize_parser())
    assert {"--lr", "--batch-size", "--num-similar", "--seeds", "--resume", "--select-on"} <= train
    assert not {"--output", "--save-cas", "--from-cas", "--visualize", "--video", "--save-bank"} & train
    assert not {"--lr", "--batch-size", "--num-similar", "--seeds", "--resume", "--select-on", "--model-name",
                "--k", "--alpha1", "--log-every", "--dataset", "--AWM"} & (test | localize)
    assert {"--visualize", "--video", "--from-cas", "--export-official"} <= test
    assert {"--figures", "--top", "--extract-size", "--extract-batch-size"} <= localize
    help_text = build_test_parser().format_help()
    assert "--visualize N" in help_text and "--lr" not in help_text and "--num-similar" not in help_text


def test_one_name_one_meaning_and_one_extraction_group():
    import extract_features
    from options import build_localize_parser, build_test_parser

    def actions(parser):
        return {a.dest: (a.option_strings, a.default, a.type, a.choices, a.nargs) for a in parser._actions}

    test_visualize = next(a for a in build_test_parser()._actions if "--visualize" in a.option_strings)
    assert test_visualize.type is int  # a count; localize.py's switch is --figures
    assert "--visualize" not in _flags(build_localize_parser())

    def group(parser):
        return next(g for g in parser._action_groups if g.title.startswith("feature extraction"))

    extract, localize = extract_features.build_parser(), build_localize_parser()
    dests = [a.dest for a in group(extract)._group_actions]
    assert dests == [a.dest for a in group(localize)._group_actions]
    assert {d: actions(extract)[d] for d in dests} == {d: actions(localize)[d] for d in dests}
    assert not {"--batch-size", "--size"} & _flags(extract)
    # a flag several commands share means the same in each: same default, type and choices
    parsers = [build_parser(), build_test_parser(), localize, extract]
    shared = {}
    for parser in parsers:
        for dest, (strings, default, kind, choices, _) in actions(parser).items():
            if dest not in ("help", "inputs", "pretrained_ckpt", "output"):
                shared.setdefault(dest, set()).add((tuple(strings), repr(default), kind, repr(choices)))
    assert {d: v for d, v in shared.items() if len(v) > 1} == {}


def test_the_extraction_flags_offer_what_the_extractor_accepts():
    from feature_extraction import decode, flow
    import options

    choices = {a.dest: a.choices for a in options.build_localize_parser()._actions}
    assert (choices["flow"], choices["flow_quantize"], choices["sample_mode"]) == \
        (("auto", *flow.FLOW_METHODS), flow.QUANTIZE_MODES, decode.SAMPLE_MODES)
    assert options.flow_method("auto", "cuda") == "torch" and options.flow_method("auto", "cpu") == "opencv"
    assert options.flow_method("opencv", "cuda") == "opencv"


@pytest.mark.parametrize("command, argv, message", [
    ("main.py", ["--batch-size", "4"], "--batch-size 4 cannot hold --num-similar 3 pairs"),
    ("main.py", ["--batch-size", "6", "--num-similar", "-1"], "cannot hold --num-similar -1 pairs"),
    ("main.py", ["--feature-size", "63"], "--feature-size must be even"),
    ("main.py", ["--holdout", "0"], "--holdout is a fraction"),
    ("main.py", ["--t", "5"], "STCL_THU does not smooth its scores"),
    ("main.py", ["--seeds", "1,x"], "expected comma-separated integers"),
    ("main.py", ["--seeds", "1,1"], "distinct seeds"),
    ("test.py", ["--pretrained-ckpt", "x.pt", "--feature-size", "63"], "--feature-size must be even"),
    ("test.py", ["--pretrained-ckpt", "x.pt", "--use-model", "STCL_THU", "--t", "5"], "does not smooth"),
    ("localize.py", ["--pretrained-ckpt", "x.pt", "a.npy", "--feature-size", "7"], "--feature-size must be even"),
])
def test_cross_option_checks_are_parse_errors(command, argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        _commands()[command](argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "error: " in err and message in err and "Traceback" not in err


def test_train_sh_commands_and_the_released_test_command_parse():
    import shlex

    from options import build_test_parser, parse_checkpoint_command

    script = (REPO / "train.sh").read_text().replace("\\\n", " ")
    commands = [shlex.split(line.split("main.py", 1)[1].replace('"$@"', ""))
                for line in script.splitlines() if "python3 main.py" in line]
    assert len(commands) == 4
    for argv in commands:
        args = parse_args(argv)
        assert args.max_iter >= 801 and args.seed == 3552
    args, given = parse_checkpoint_command(build_test_parser, ["--pretrained-ckpt", "best.pkl"])
    assert given == {"pretrained_ckpt": "best.pkl"} and args.select_on == "test"


def test_explicit_args_names_only_what_was_written():
    from options import build_localize_parser, explicit_args

    assert explicit_args(["--lr", "1e-3", "--amp"]) == {"lr": 1e-3, "amp": True}
    assert explicit_args(["--pretrained-ckpt", "x.pt", "a.npy", "--top", "3"], build_localize_parser()) == \
        {"pretrained_ckpt": "x.pt", "inputs": ["a.npy"], "top": 3}
