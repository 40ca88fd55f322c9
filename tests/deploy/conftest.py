"""Shared fixtures for the deployment tests (tests/deploy): the repository's paths, the pyroguard
binary and certificates minted with openssl for the session."""

import os
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
PYROGUARD_BIN = Path(os.environ.get("PYROGUARD_BIN", ROOT / "build" / "pyroguard"))


def load_yaml(path):
    with open(path) as f:
        return yaml.safe_load(f)


def load_all_yaml(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


@pytest.fixture(scope="session")
def certs(tmp_path_factory):
    out = tmp_path_factory.mktemp("certs")
    subprocess.run(["bash", str(ROOT / "tests" / "certs" / "mint.sh"), str(out)], check=True,
                   capture_output=True)
    return out


@pytest.fixture(scope="session")
def pyroguard_bin():
    if not PYROGUARD_BIN.exists():
        pytest.fail("pyroguard binary not found at %s (run `make`, or set PYROGUARD_BIN)"
                    % PYROGUARD_BIN)
    return PYROGUARD_BIN
