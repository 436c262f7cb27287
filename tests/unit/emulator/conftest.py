# Copyright (c) smarthost.postfix maintainers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Fixtures of the emulator's unit tests: test certificates, one emulator per module, clean state per test."""

from __future__ import annotations

import os
import subprocess

import pytest
from emulator_harness import EMULATOR_DIR, Emulator, emulatorctl


@pytest.fixture(scope="session")
def certs(tmp_path_factory):
    outdir = tmp_path_factory.mktemp("certs")
    subprocess.run(["bash", os.path.join(EMULATOR_DIR, "make-certs.sh"), str(outdir)], check=True, capture_output=True)
    return str(outdir)


@pytest.fixture(scope="module")
def shared_emulator(certs, tmp_path_factory):
    emulator = Emulator(certs, tmp_path_factory.mktemp("state"))
    yield emulator
    emulator.stop()
    # Expected refusals are one-line warnings; a traceback means a session hit an emulator bug.
    assert not [line for line in emulator.output if "Traceback" in line], "".join(emulator.output)


@pytest.fixture
def emulator(shared_emulator):
    """The module's emulator, back in normal mode, default OAuth and access settings, empty records, for each test."""
    shared_emulator.restore_defaults()
    emulatorctl.reset_records(shared_emulator.state_dir)
    return shared_emulator
