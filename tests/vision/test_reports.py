"""Training plots: a history whose first row is a validation before any training."""

from __future__ import annotations

from pathlib import Path

from vision.reports import plot_curves


def test_curves_plot_a_history_that_starts_before_training(tmp_path: Path) -> None:
    """The fine-tune's epoch 0 (the served weights validated, no loss yet) is plotted as a
    validation point, not read for a training loss."""
    history = [
        {"epoch": 0, "init": "weights.safetensors", "val_dice": 0.5},
        {"epoch": 1, "loss": 0.9},
        {"epoch": 2, "loss": 0.8, "val_dice": 0.6},
    ]
    path = plot_curves(history, tmp_path / "curves.png")
    assert path.stat().st_size > 1000
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
