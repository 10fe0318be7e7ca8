"""The cost report: the published parameter and MAC numbers."""

import subprocess
import sys

from speechbrain_nes2net.cost.backends import cost_table


def test_cost_table_reproduces_published_numbers():
    costs = cost_table(frames=200)
    assert costs["Nes2Net"].params == 510_769
    assert costs["Nes2Net-X"].params == 511_014
    assert costs["Nes2Net-X"].params_two_logits == 512_039
    assert costs["AASIST+DR"].params_two_logits == 447_242
    assert round(costs["Nes2Net"].macs / 1e6, 2) == 53.63
    assert round(costs["Nes2Net-X"].macs / 1e6, 2) == 83.74
    reduction = 1 - costs["Nes2Net-X"].macs / costs["AASIST+DR"].macs
    assert reduction >= 0.87


def test_cost_command_line_prints_every_backend():
    out = subprocess.run(
        [sys.executable, "-m", "speechbrain_nes2net.cost.backends", "--frames", "50"],
        capture_output=True, text=True, check=True,
    ).stdout
    for name in ("AASIST+DR", "Nes2Net", "Nes2Net-X", "Nes2Net-X-SeLU", "Nes2Net-X+ASTP"):
        assert f"| {name} |" in out
    assert "MACs (50 frames)" in out
