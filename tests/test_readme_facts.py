"""The facts README.md quotes, checked so they cannot go stale: the one-run example's run id
follows from its command, every `make` target and variable it names is in `make help`, the
Layout lists files that exist (and every module and script there is), the gallery's images
exist."""

from __future__ import annotations

import re
import shlex
import subprocess

from tests.conftest import REPO

README = (REPO / "README.md").read_text(encoding="utf-8")


def _section(title: str) -> str:
    start = README.index(f"\n## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start: end if end > 0 else None]


def test_the_one_run_examples_id_is_the_id_of_its_command(monkeypatch):
    from pcalm.cli import compose, run_config
    from pcalm.runs.folder import RunFolder

    one = _section("One run")
    command = re.search(r"```bash\n(python experiments/run\.py [^\n]+)\n```", one).group(1)
    quoted = re.search(r"results/runs/([0-9a-f]{12})", one).group(1)
    monkeypatch.delenv("PCALM_DATA_VERIFY", raising=False)  # as a user's shell has it
    cfg = run_config(compose(shlex.split(command)[2:]))
    assert RunFolder(cfg["results_dir"], cfg).id == quoted


def _make_help() -> str:
    return subprocess.run(["make", "help"], cwd=REPO, capture_output=True, text=True,
                          timeout=60).stdout


def test_every_make_target_and_variable_the_readme_names_is_in_make_help():
    listed = _make_help()
    names = {line.split()[0] for line in listed.splitlines() if line.strip()}
    # commands: `make x ...` in backquotes, or a line of a code block
    quoted = set(re.findall(r"(?:`|^|&& )make ([a-z][a-z0-9_-]+)(?![A-Za-z])", README, re.M))
    assert quoted - names == set(), "README names make targets that `make help` lacks"
    variables = set(re.findall(r"\b(EXP|SCALE|LAUNCHER|TRAIN|ARGS|DATA|LOCK|TORCH|MUTANTS)=",
                               README))
    assert variables and variables <= names
    makefile = (REPO / "Makefile").read_text()
    targets = set(re.findall(r"^([a-z][a-z0-9_-]+):", makefile, re.M)) - {"figures"}
    phony = set(re.findall(r"\$\(FIGURES\)|[a-z][a-z0-9_-]+", makefile.split(".PHONY:")[1]
                           .split("\n\n")[0]))
    assert {t for t in targets if t in phony} <= names  # every command has its line


def test_the_layout_names_files_that_exist_and_every_module_and_script():
    block = _section("Layout").split("```")[1]
    rows: dict[str, str] = {}
    folder = None
    for line in block.splitlines():
        head = re.match(r"^(\S+/)\s", line)
        sub = re.match(r"^  (\S+/|\(shared\))\s", line)  # a subfolder row of pcalm/
        if head:
            folder = head.group(1)
        elif sub and folder and folder.startswith("pcalm/"):
            folder = "pcalm/" if sub.group(1) == "(shared)" else "pcalm/" + sub.group(1)
        if folder:
            rows[folder] = rows.get(folder, "") + " " + line
    packages = {f"{p.parent.relative_to(REPO).as_posix()}/"
                for p in (REPO / "pcalm").rglob("*.py")}
    assert packages <= set(rows), f"pcalm folders without a Layout row: {packages - set(rows)}"
    for folder in (*sorted(packages), "scripts/", "experiments/"):
        named = set(re.findall(r"[\w.-]+\.(?:py|sh)", rows[folder]))
        for name in named:
            if "N" in name:  # plot_figureN.py stands for every figure's script
                assert list((REPO / folder).glob(name.replace("N", "*"))), name
            else:
                assert (REPO / folder / name).is_file(), f"{folder}{name} named but missing"
        present = {p.name for p in (REPO / folder).iterdir()
                   if p.suffix in (".py", ".sh") and p.name != "__init__.py"}
        unnamed = {n for n in present - named if not re.fullmatch(r"plot_figure\w+\.py", n)}
        assert unnamed == set(), f"{folder}: not in README's Layout"
    for name in ("requirements-lock.txt", "configs/hydra/help", "hydra_plugins/pcalm_launcher"):
        assert (REPO / name).exists(), name


def test_the_readmes_images_exist_and_carry_their_scale():
    images = re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", README)
    assert len(images) >= 10
    for image in images:
        assert (REPO / image).is_file(), image
        assert re.search(r"-(smoke|paper|paper_cpu)\.png$", image), image
