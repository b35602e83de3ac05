"""Figures: map panels for vector and image pairs, and the metric curves of a run."""

import pytest
import torch

from otsr.pairs import GaussianShift, make_pair
from otsr.plots import curves_figure, image_rows, map_figure, save_png


def test_vector_map_figure_is_an_rgb_image(tmp_path):
    pair = GaussianShift(dim=4)
    img = map_figure(lambda x: x + 1, pair, "cpu", n=200)
    assert img.dtype == torch.uint8 and img.shape[0] == 3 and min(img.shape[1:]) > 100
    assert save_png(img, tmp_path / "map.png").stat().st_size > 1000


def test_image_map_figure_shows_input_output_target():
    pair = make_pair("degraded-images", size=16, pool=32)
    img = map_figure(lambda x: x, pair, "cpu")
    assert img.shape == (3, 3 * 18 + 2, 8 * 18 + 2)  # rows: inputs, outputs, targets; 8 samples, 2 px padding


def test_curves_figure_plots_each_metric_against_steps(tmp_path):
    evals = [{"step": s, "l2_uvp": 10.0 / (s + 1), "bias_sliced_w2": 1.0, "ot_consistency": 1.0} for s in (0, 50, 100)]
    path = curves_figure(evals, tmp_path / "curves.png", title="run")
    assert path is not None and path.stat().st_size > 5000


@pytest.mark.parametrize("channels", [1, 3])
def test_png_and_grid_match_torchvisions(tmp_path, channels):
    """otsr's own PNG writer and image grid (the training path does not import torchvision) give what torchvision's
    decoder reads back and what its make_grid lays out."""
    from torchvision.io import decode_png, read_file
    from torchvision.utils import make_grid

    gen = torch.Generator().manual_seed(0)
    rows = [torch.rand(5, 3, 7, 9, generator=gen), torch.rand(3, 3, 7, 9, generator=gen)]
    grid = image_rows(rows, nrow=4)
    want = make_grid(torch.cat([r[:4] for r in rows]), nrow=4, padding=2, pad_value=1.0)
    assert torch.equal(grid, (want * 255).round().to(torch.uint8))
    img = grid[:channels].contiguous()
    path = save_png(img, tmp_path / "g.png")
    assert torch.equal(decode_png(read_file(str(path))), img)
    with pytest.raises(ValueError, match="uint8"):
        save_png(img.float(), tmp_path / "bad.png")
