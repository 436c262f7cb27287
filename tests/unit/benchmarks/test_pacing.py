# Copyright (c) smarthost.postfix maintainers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The pacing design the benchmark measures (benchmarks/pacing.py): the rule, and that Postfix takes it."""

from __future__ import annotations

import fractions
import os
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "..", "benchmarks"))
import pacing  # noqa: E402  pylint: disable=wrong-import-position


@pytest.mark.parametrize(
    "rate, expected",
    [
        (14, [1] * 14),
        (3.5, [1, 1, 1, 2]),
        (0.5, [2]),
        (0.023, [44]),
        (1.9, [1, 2, 3]),
        (0.0058, [173]),
        (1, [1]),
    ],
)
def test_design_examples(rate, expected):
    assert pacing.design(rate) == expected


@pytest.mark.parametrize("rate", [14, 3.5, 0.5, 0.023, 1.9, 0.0058, 2.7, 0.3, 7.25, 13.9, 0.95])
def test_design_stays_between_ninety_percent_and_the_rate(rate):
    exact = fractions.Fraction(repr(rate)) if isinstance(rate, float) else fractions.Fraction(rate)
    total = sum(fractions.Fraction(1, delay) for delay in pacing.design(rate))
    assert fractions.Fraction(9, 10) * exact <= total <= exact
    assert all(isinstance(delay, int) and delay >= 1 for delay in pacing.design(rate))


def test_uniform_design_is_the_first_idea():
    assert pacing.uniform_design(3.5) == [2] * 7
    assert pacing.uniform_design(14) == [1] * 14


@pytest.mark.parametrize("rate", [0, -1])
def test_design_refuses_a_rate_that_is_not_positive(rate):
    with pytest.raises(ValueError, match="positive"):
        pacing.design(rate)


def test_weights_follow_speed():
    assert pacing.weights([1, 1, 1, 2]) == [2, 2, 2, 1]
    assert pacing.weights([1, 2, 3]) == [6, 3, 2]
    assert pacing.weights([44]) == [1]


def test_settings_are_taken_by_postfix(postfix_dir):
    """The real postconf accepts every parameter once the clones are in master.cf (no 'unused parameter')."""
    main_cf, master_cf = pacing.settings(pacing.design(3.5), recipient_limit=50, chroot="n")
    with open(os.path.join(postfix_dir, "master.cf"), "a", encoding="utf-8") as handle:
        handle.write("\n".join(master_cf) + "\n")
    subprocess.run(["postconf", "-c", postfix_dir, "-e"] + ["%s=%s" % item for item in main_cf.items()], check=True)
    shown = subprocess.run(["postconf", "-c", postfix_dir, "-n"], capture_output=True, text=True, check=True)
    assert "unused parameter" not in shown.stderr
    assert "smtp4_destination_rate_delay = 2s" in shown.stdout
    assert (
        "sender_dependent_default_transport_maps = randmap:{smtp1, smtp1, smtp2, smtp2, smtp3, smtp3, smtp4}"
        in shown.stdout
    )
    service = subprocess.run(
        ["postconf", "-c", postfix_dir, "-M", "smtp4/unix"], capture_output=True, text=True, check=True
    ).stdout.split()
    assert service[:8] == ["smtp4", "unix", "-", "-", "n", "-", "-", "smtp"]
    assert service[-1] == "syslog_name=postfix/smtp4"
