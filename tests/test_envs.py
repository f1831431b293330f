"""The conda environments (envs/*.yaml) pin the same versions as requirements.txt."""
import glob
import os
import re

import yaml
from conftest import REPO


def pins(lines):
    return dict(line.strip().split("==") for line in lines if "==" in line and not line.strip().startswith("#"))


# The serving environment has its own requirements file (kserve needs protobuf < 7).
OWN_REQUIREMENTS = {"serve.yaml": "requirements-serve.txt"}


def test_every_conda_pin_matches_requirements():
    files = sorted(glob.glob(os.path.join(REPO, "envs", "*.yaml")))
    assert len(files) == 6
    for path in files:
        requirements = OWN_REQUIREMENTS.get(os.path.basename(path), "requirements.txt")
        with open(os.path.join(REPO, requirements), encoding="utf-8") as handle:
            required = pins(handle)
        with open(path, encoding="utf-8") as handle:
            environment = yaml.safe_load(handle)
        pip = next(item["pip"] for item in environment["dependencies"] if isinstance(item, dict))
        for name, version in pins(pip).items():
            assert required.get(name) == version, f"{os.path.basename(path)}: {name}=={version}"


def test_every_rule_names_an_existing_environment():
    rules = environments = 0
    for path in glob.glob(os.path.join(REPO, "workflow", "rules", "*.smk")):
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
        names = re.findall(r'^\s*conda:\s*\n\s*env\("(\w+)"\)', text, re.MULTILINE)
        rules += len(re.findall(r"^(?:rule|checkpoint) \w+:", text, re.MULTILINE))
        environments += len(names)
        for name in names:
            assert os.path.exists(os.path.join(REPO, "envs", f"{name}.yaml")), (path, name)
    assert rules > 20 and environments == rules  # every rule has one
