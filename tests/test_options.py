"""The released-compatibility flags: parsed, in their own help group, and read by nothing."""
import re
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
