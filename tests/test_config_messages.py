"""Config mistakes that once gave a vague line get one naming the file, line or key and what
is allowed (issue: reliability, second pass): a `!!` tag or broken YAML in a config file, and
a value of the wrong type for a key that exists (once reported as an "unknown key")."""

from __future__ import annotations

import shutil

import pytest

from pcalm import cli
from pcalm.errors import ConfigError


@pytest.fixture
def configs(tmp_path, monkeypatch):
    """A copy of configs/ that the test may damage; compose reads it."""
    copy = tmp_path / "configs"
    shutil.copytree(cli.CONFIG_DIR, copy)
    monkeypatch.setattr(cli, "CONFIG_DIR", copy)
    return copy


def _compose_error(overrides, with_hydra=False) -> str:
    with pytest.raises(ConfigError) as caught:
        cli.compose(overrides, with_hydra=with_hydra)
    message = str(caught.value)
    assert "\n" not in message and "Traceback" not in message
    return message


def test_a_yaml_tag_in_an_experiment_config_names_the_file_and_line(configs):
    experiment = configs / "experiment" / "figure1.yaml"
    lines = experiment.read_text().splitlines()
    experiment.write_text("\n".join(lines) + '\nx: !!python/object:os.system "ls"\n')
    message = _compose_error(["experiment=figure1"])
    assert message.startswith(f"configs/experiment/figure1.yaml line {len(lines) + 1}: "), message
    assert "python/object:os.system" in message and message.endswith("(no !! tags)")


def test_broken_yaml_names_the_file_and_line(configs):
    (configs / "model" / "resmlp.yaml").write_text("width: [8\n")  # the default model
    message = _compose_error([])
    assert message.startswith("configs/model/resmlp.yaml line "), message
    assert "!! tags" not in message


def test_a_value_of_the_wrong_type_names_the_key_and_the_type():
    message = _compose_error(["hydra/launcher=slurm", "hydra.launcher.timeout_min=abc"],
                             with_hydra=True)
    assert message == "bad value hydra.launcher.timeout_min='abc': allowed: an integer"


def test_a_misspelt_key_is_still_an_unknown_key_with_its_siblings():
    message = _compose_error(["hydra/launcher=slurm", "hydra.launcher.timeout_mn=5"],
                             with_hydra=True)
    assert message.startswith("unknown key hydra.launcher.timeout_mn: allowed in "
                              "hydra.launcher: "), message
    assert "timeout_min" in message


def test_a_checkout_without_a_groups_configs_says_so_instead_of_an_empty_list(configs):
    shutil.rmtree(configs / "data")
    message = _compose_error([])  # the default data choice has no file
    assert message == (f"bad value data='fashion_mnist': configs/data/ holds no .yaml files in "
                       f"{configs.parent}: the checkout is incomplete; allowed: restore it "
                       "(`git checkout -- configs/data`)")


def test_an_unknown_group_choice_lists_the_groups_files(configs):
    message = _compose_error(["data=cifar"])
    assert message == "bad value data='cifar': allowed: fashion_mnist, mnist, synthetic"
