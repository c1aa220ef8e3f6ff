"""The project's references to its method description resolve.

Code, tests and README cite docs/METHOD.md by anchor (``docs/METHOD.md#5-objective``, or
``#8-detection-map`` beside one); every such anchor must be a heading of that page, and
nothing may cite the spec the project was written from, which is not in the repository.
"""
import functools
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from utils import flags_doc

REPO = Path(__file__).resolve().parents[1]
METHOD = REPO / "docs" / "METHOD.md"
SOURCES = [p for pattern in ("*.py", "*/*.py", "*.md", "*/*.md", "*.sh")
           for p in REPO.glob(pattern) if ".git" not in p.parts]


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def method_anchors() -> set:
    return {github_anchor(line.lstrip("#")) for line in METHOD.read_text().splitlines() if line.startswith("#")}


def test_github_anchor_matches_githubs_rule():
    assert github_anchor(" 5. Objective") == "5-objective"
    assert github_anchor("11. Golden outputs") == "11-golden-outputs"
    assert github_anchor("1. Cross-modal attention") == "1-cross-modal-attention"


def cited_anchors(text: str) -> list:
    return re.findall(r"METHOD\.md#([\w-]+)", text) + re.findall(r"``#(\d+-[\w-]+)``", text) \
        + re.findall(r"\]\(#(\d+-[\w-]+)\)", text)


def test_every_cited_section_of_the_method_page_exists():
    anchors = method_anchors()
    assert {"3-scl", "5-objective", "7-proposals", "8-detection-map"} <= anchors
    cited = {(p.relative_to(REPO).as_posix(), a) for p in SOURCES for a in cited_anchors(p.read_text())}
    assert len(cited) > 30, "the references were not found: the pattern no longer matches how they are written"
    broken = sorted((path, a) for path, a in cited if a not in anchors)
    assert not broken, f"references to sections that docs/METHOD.md does not have: {broken}"


@pytest.mark.parametrize("stale", [r"spec section", r"STCL-NET\.md", r"shared/docs"])
def test_nothing_cites_the_spec_outside_the_repository(stale):
    found = [f"{p.relative_to(REPO)}:{n}" for p in SOURCES if p.name != "test_docs.py"
             for n, line in enumerate(p.read_text().splitlines(), 1) if re.search(stale, line)]
    assert not found, f"cite docs/METHOD.md#<section> instead of the spec: {found}"


# ----------------------------------------------------------------------------- the user docs
# README.md, dataset/README.md and docs/*.md: links resolve, commands name real flags, the
# generated flags page is current, the README is short and its quick start runs.

USER_DOCS = [REPO / "README.md", REPO / "dataset" / "README.md", *sorted((REPO / "docs").glob("*.md"))]
#: train.sh's own first arguments: each picks a mode, then every other flag goes to main.py.
TRAIN_SH_MODES = {"--demo", "--demo-activitynet", "--activitynet"}
#: README sections whose fenced bash commands the suite runs, in order, in a copy of the checkout.
QUICK_START = ("Demo", "Evaluate", "Localize")
#: appended to every training command of the quick start: the same code path, cut to seconds.
CUT = ["--max-iter", "3", "--interval", "2"]


def prose_and_code(text: str):
    """(prose lines, fenced code blocks as (info, lines)) of a Markdown page."""
    prose, blocks, block = [], [], None
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            if block is None:
                block = (line.strip()[3:].strip(), [])
            else:
                blocks.append(block)
                block = None
        elif block is not None:
            block[1].append(line)
        else:
            prose.append(line)
    return prose, blocks


def page_anchors(path: Path) -> set:
    prose, _ = prose_and_code(path.read_text())
    return {github_anchor(line.lstrip("#")) for line in prose if re.match(r"#{1,6} ", line)}


def doc_links(path: Path):
    """The target of every relative link and image of a page's prose (code blocks excluded)."""
    prose, _ = prose_and_code(path.read_text())
    for line in prose:
        for target in re.findall(r"\]\(([^)\s]+)\)", re.sub(r"`[^`]*`", "", line)):
            if not re.match(r"[a-z]+:", target):
                yield target


def test_the_user_docs_exist_and_the_helpers_see_them():
    names = {p.relative_to(REPO).as_posix() for p in USER_DOCS}
    assert {"README.md", "docs/flags.md", "docs/sweeps.md", "docs/code.md", "docs/troubleshooting.md"} <= names
    assert "docs/sweeps.md" in set(doc_links(REPO / "README.md"))
    assert "demo" in page_anchors(REPO / "README.md")
    assert "sweeps" not in page_anchors(REPO / "README.md"), "the helper reads a heading that is not there"


def test_every_relative_link_and_anchor_resolves():
    broken = []
    for page in USER_DOCS:
        for target in doc_links(page):
            file, _, anchor = target.partition("#")
            dest = (page.parent / file).resolve() if file else page
            if not dest.exists():
                broken.append(f"{page.relative_to(REPO)}: {target} (no such file)")
            elif anchor and (dest.suffix != ".md" or anchor not in page_anchors(dest)):
                broken.append(f"{page.relative_to(REPO)}: {target} (no heading #{anchor} in {dest.name})")
    assert not broken, "broken links:\n" + "\n".join(broken)


def command_lines(path: Path) -> list:
    """Every shell line of a page: fenced code lines (continuations joined, '$ ' prompts dropped)
    and inline code spans."""
    prose, blocks = prose_and_code(path.read_text())
    lines = [span for line in prose for span in re.findall(r"`([^`]+)`", line)]
    for _, block in blocks:
        text = re.sub(r"\\\n\s*", " ", "\n".join(block))
        lines += [line.strip().removeprefix("$ ") for line in text.splitlines()]
    return lines


def commands_of(line: str):
    """(command, args) of each `python X.py` / `python -m M` / `bash train.sh` in a shell line:
    command is "X.py" or "-m M" (train.sh's flags are main.py's)."""
    try:
        tokens = shlex.split(line, comments=True)
    except ValueError:
        tokens = line.split()
    simple = [[]]
    for token in tokens:
        if token in ("&&", "||", ";", "|"):
            simple.append([])
        else:
            simple[-1].append(token)
    for words in simple:
        for i, word in enumerate(words):
            rest = words[i + 1:]
            if word in ("python", "python3") and rest:
                if rest[0] == "-m" and len(rest) > 1:
                    yield f"-m {rest[1]}", rest[2:]
                elif rest[0].endswith(".py"):
                    yield rest[0], rest[1:]
                break
            if word == "bash" and rest and rest[0].endswith("train.sh"):
                yield "main.py", [a for a in rest[1:] if a not in TRAIN_SH_MODES]
                break


def test_commands_of_reads_shell_lines():
    assert list(commands_of("nice -n 5 python main.py --lr 1 --max-iter=3  # --not-a-flag")) == \
        [("main.py", ["--lr", "1", "--max-iter=3"])]
    assert list(commands_of("bash train.sh --demo --lr 0 && python -m dataset.make_demo --seed 1")) == \
        [("main.py", ["--lr", "0"]), ("-m dataset.make_demo", ["--seed", "1"])]
    assert list(commands_of("python3 -m pytest -q")) == [("-m pytest", ["-q"])]


@functools.lru_cache(maxsize=None)
def accepted_flags(command: str) -> frozenset:
    flags = flags_doc.option_strings(flags_doc.command_parser(command))
    if command == "sweep.py":  # every flag that is not sweep.py's goes to each trial's main.py
        flags |= flags_doc.option_strings(flags_doc.command_parser("main.py"))
    return frozenset(flags)


def in_repo(command: str) -> bool:
    if command.startswith("-m "):
        top = command[3:].split(".")[0]
        return (REPO / top).is_dir() or (REPO / f"{top}.py").is_file()
    return True


def test_every_flag_in_a_documented_command_exists():
    seen, unknown = 0, []
    for page in USER_DOCS:
        for line in command_lines(page):
            for command, args in commands_of(line):
                if not in_repo(command):
                    continue  # python -m pytest, -m venv ...
                flags = [a.split("=")[0] for a in args if re.match(r"--[A-Za-z]", a)]
                if not flags:
                    continue
                try:
                    accepted = accepted_flags(command)
                except LookupError as error:
                    unknown.append(f"{page.relative_to(REPO)}: {line!r}: {error}")
                    continue
                seen += len(flags)
                unknown += [f"{page.relative_to(REPO)}: {line!r}: {command} has no {f}"
                            for f in flags if f not in accepted]
    assert seen > 100, "the documented commands were not found: the patterns no longer match the pages"
    assert not unknown, "flags the commands do not have:\n" + "\n".join(unknown)


def test_the_flag_check_catches_a_wrong_flag():
    assert "--max-iter" in accepted_flags("main.py") and "--grid" in accepted_flags("sweep.py")
    assert "--max-iters" not in accepted_flags("main.py")
    assert "--top" in accepted_flags("localize.py") and "--top" not in accepted_flags("main.py")


def test_flags_page_is_generated_from_the_parsers():
    expected = flags_doc.render()
    assert (REPO / "docs" / "flags.md").read_text() == expected, \
        "docs/flags.md is not what the parsers give: run python -m utils.flags_doc > docs/flags.md"
    commands = flags_doc.commands()
    assert {"main.py", "test.py", "localize.py", "sweep.py", "-m dataset.make_demo"} <= set(commands), commands
    for command in commands:  # every option of every command is on the page
        section = expected.split(f"## `python {command}`")[1].split("\n## ")[0]
        missing = [s for s in flags_doc.option_strings(flags_doc.command_parser(command))
                   if s.startswith("--") and s != "--help" and f"`{s}" not in section]
        assert not missing, f"{command}: {missing} missing from its section"


def test_readme_is_short():
    assert len((REPO / "README.md").read_text().splitlines()) <= 200


def quick_start_commands() -> list:
    """The README's fenced bash lines under the QUICK_START headings, in order."""
    commands, section, fence = [], None, None
    for line in (REPO / "README.md").read_text().splitlines():
        if fence is None and line.startswith("## "):
            section = line[3:].strip()
        elif line.startswith("```"):
            fence = line[3:].strip() if fence is None else None
        elif fence == "bash" and section in QUICK_START:
            if commands and commands[-1].endswith("\\"):
                commands[-1] = commands[-1][:-1] + " " + line.strip()
            else:
                commands.append(line.strip())
    return [c for c in commands if c]


def fresh_copy(dest: Path) -> Path:
    """The checkout's tracked files (what a fresh clone has), copied to dest."""
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True)
    names = [n for n in listed.stdout.decode().split("\0") if n] if listed.returncode == 0 else []
    if not names:  # not a git checkout: everything but run outputs and generated data
        shutil.copytree(REPO, dest, ignore=shutil.ignore_patterns(".git", "runs", "demo*", "__pycache__"))
        return dest
    for name in names:
        if (REPO / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, dest / name)
    return dest


def test_readme_quick_start_runs_as_written(tmp_path):
    """The demo, evaluate and localize commands of the README, in a fresh copy of the checkout,
    with the training cut to 3 iterations (CUT appended to train.sh / main.py)."""
    commands = quick_start_commands()
    assert any(c.startswith("bash train.sh --demo") for c in commands), commands
    assert any(c.startswith("python localize.py") for c in commands), commands
    clone = fresh_copy(tmp_path / "clone")
    assert not (clone / "dataset" / "demo").exists() and not (clone / "runs").exists()
    bin_dir = tmp_path / "bin"  # `python` and `python3` as the README's reader has them: this interpreter
    bin_dir.mkdir()
    for name in ("python", "python3"):
        (bin_dir / name).symlink_to(sys.executable)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", "OMP_NUM_THREADS": "1",
           "MPLBACKEND": "Agg"}
    outputs = []
    for command in commands:
        trains = any(c == "main.py" for c, _ in commands_of(command))
        run = command.split("#")[0].strip() + (" " + " ".join(CUT) if trains else "")
        done = subprocess.run(["bash", "-c", run], cwd=clone, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"{run}\nexit {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        outputs.append(done.stdout)
    run_dir = clone / "runs" / "demo"
    assert (run_dir / "best.pt").is_file() and (run_dir / "last.pt").is_file()
    rows = (run_dir / "results.csv").read_text().splitlines()
    assert len(rows) >= 2 and rows[0].startswith("iteration,mAP@0.1"), rows  # the cut schedule was evaluated
    assert (run_dir / "learning_curves.png").is_file()
    assert any("mAP" in out for out in outputs)
    assert list((run_dir / "best_test").glob("figures/*.png")) or list(run_dir.glob("*_test/figures/*.png"))
    localized = [json.loads(p.read_text()) for p in (clone / "runs").rglob("detections.json")
                 if "localize" in p.as_posix()]
    assert localized and all("results" in d for d in localized)
