"""The unpaired ×scale SR problem as a Pair: P = LR crops, Q = HR crops (no true map), plus the paired
validation set on which PSNR/SSIM (and LPIPS/FID with local weights) are measured."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
import torch.nn.functional as F

from otsr.costs import upsample_like
from otsr.metrics import frechet
from otsr.pairs._base import Pair
from otsr.sr.data import CropStream, check_min_size, list_images, paired_validation, read_image
from otsr.sr.demo import build_demo, default_demo_root
from otsr.sr.metrics import LPIPS, InceptionFeatures, fid, psnr, ssim

POOL_FEATURES = 16  # the weight-free feature space of the bias view: 16x16 average-pooled RGB (768-d)


@dataclasses.dataclass(repr=False)
class UnpairedSR(Pair):
    """Unpaired SR from image folders in the AIM19 layout (train_lr, train_hr, valid_lr, valid_hr)."""

    name = "sr-folders"
    dim_range = (8, 1024)  # HR crop side

    root: str = "demo"  # dataset folder; 'demo' builds the offline demo set (scikit-image photos) once
    scale: int = 4  # upscaling factor
    hr_crop: int = 128  # HR crop side; LR crops are hr_crop / scale
    workers: int = 2  # DataLoader decoding workers per stream
    crops_per_image: int = 8  # crops cut from each decoded image
    valid_limit: int = 0  # validation pairs used (0 = all)
    valid_crop: int = 0  # HR side of the centre crop evaluated per validation image (0 = whole images)
    inception: str = ""  # local torchvision inception_v3 weights: enables FID
    lpips_alexnet: str = ""  # local torchvision alexnet weights ...
    lpips_lin: str = ""  # ... and LPIPS linear heads: enable LPIPS
    seed: int = 0  # crop positions and augmentation

    def __post_init__(self):
        self.check_dim(self.hr_crop, key="hr_crop")
        if self.scale < 2 or self.hr_crop % self.scale:
            raise ValueError(f"pair {self.name!r}: hr_crop={self.hr_crop} must be a multiple of "
                             f"scale={self.scale} >= 2")
        root = build_demo(default_demo_root(), self.scale) if self.root == "demo" else Path(self.root)
        self.lr_files, self.hr_files = list_images(root / "train_lr"), list_images(root / "train_hr")
        check_min_size(self.lr_files, self.hr_crop // self.scale)
        check_min_size(self.hr_files, self.hr_crop)
        self.valid = paired_validation(root / "valid_lr", root / "valid_hr", self.scale, self.valid_limit)
        self._lr = CropStream(self.lr_files, self.hr_crop // self.scale, workers=self.workers,
                              crops_per_image=self.crops_per_image, seed=self.seed)
        self._hr = CropStream(self.hr_files, self.hr_crop, workers=self.workers,
                              crops_per_image=self.crops_per_image, seed=self.seed + 1)
        self._features: dict = {}
        self._var_q: float | None = None

    @property
    def shape(self):
        """LR crops (3, hr_crop / scale, hr_crop / scale)."""
        s = self.hr_crop // self.scale
        return (3, s, s)

    @property
    def shape_q(self):
        """HR crops (3, hr_crop, hr_crop)."""
        return (3, self.hr_crop, self.hr_crop)

    def sample_p(self, n, generator):
        """LR crops from the decoding workers (their own seeded RNG; the generator only sets the device)."""
        return self._lr.take(n, generator.device)

    def sample_q(self, n, generator):
        """HR crops, independent of the LR ones."""
        return self._hr.take(n, generator.device)

    def var_q(self) -> float:
        """Var(Q) estimated once on 256 HR crops."""
        if self._var_q is None:
            y = self._hr.take(256, "cpu").flatten(1)
            self._var_q = float(y.var(0).sum())
        return self._var_q

    def metric_notes(self) -> dict[str, str]:
        """Metrics that cannot be computed, with the reason (never faked)."""
        notes = {}
        if not self.inception:
            notes["fid"] = "unavailable: no local Inception-v3 weights given (pair parameter 'inception')"
        if not (self.lpips_alexnet and self.lpips_lin):
            notes["lpips"] = "unavailable: no local AlexNet + LPIPS head weights given ('lpips_alexnet', 'lpips_lin')"
        notes["l2_uvp"] = "unavailable: real unpaired data has no known OT map"
        return notes

    def validation_images(self, device) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(LR, HR) float tensors (1, 3, h, w) in [0, 1], centre-cropped when ``valid_crop`` is set."""
        out = []
        for lr_file, hr_file in self.valid:
            lr, hr = read_image(lr_file).float()[None] / 255, read_image(hr_file).float()[None] / 255
            if self.valid_crop:
                c, s = self.valid_crop, self.scale
                h0, w0 = (lr.shape[-2] - c // s) // 2, (lr.shape[-1] - c // s) // 2
                lr = lr[..., h0:h0 + c // s, w0:w0 + c // s]
                hr = hr[..., h0 * s:h0 * s + c, w0 * s:w0 * s + c]
            out.append((lr.to(device), hr.to(device)))
        return out

    def map_eval_names(self) -> set[str]:
        """Names ``map_eval`` reports with the weights this pair was given."""
        names = {"psnr", "ssim", "psnr_bicubic", "ssim_bicubic", "bias_frechet_pool16"}
        if self.lpips_alexnet and self.lpips_lin:
            names.add("lpips")
        if self.inception:
            names.add("fid")
        return names

    def _feature(self, key: str, build):
        if key not in self._features:
            self._features[key] = build()
        return self._features[key]

    @torch.no_grad()
    def map_eval(self, t, device) -> dict[str, float]:
        """PSNR/SSIM of T(LR) and of bicubic against the paired HR images; LPIPS/FID when weights are given;
        the bias view: Fréchet distance between pooled features of T(LR crops) and HR crops."""
        ps, ss, pb, sb, outs, his, lps = [], [], [], [], [], [], []
        lpips = self._feature("lpips", lambda: LPIPS(self.lpips_alexnet, self.lpips_lin).to(device)) \
            if self.lpips_alexnet and self.lpips_lin else None
        for lr, hr in self.validation_images(device):
            sr = t(lr).clamp(0, 1)
            bic = upsample_like(lr, hr).clamp(0, 1)
            ps.append(psnr(sr, hr))
            ss.append(ssim(sr, hr))
            pb.append(psnr(bic, hr))
            sb.append(ssim(bic, hr))
            if lpips is not None:
                lps.append(lpips(sr, hr))
            outs.append(sr)
            his.append(hr)
        out = {"psnr": float(torch.cat(ps).mean()), "ssim": float(torch.cat(ss).mean()),
               "psnr_bicubic": float(torch.cat(pb).mean()), "ssim_bicubic": float(torch.cat(sb).mean())}
        if lps:
            out["lpips"] = float(torch.cat(lps).mean())
        g = torch.Generator(device=device).manual_seed(0)
        n = 256
        fake = torch.cat([t(self.sample_p(64, g)).clamp(0, 1) for _ in range(n // 64)])
        real = self.sample_q(n, g)
        pool = lambda z: F.adaptive_avg_pool2d(z, POOL_FEATURES).flatten(1)  # noqa: E731
        out["bias_frechet_pool16"] = frechet(pool(fake), pool(real))
        if self.inception:
            inc = self._feature("inception", lambda: InceptionFeatures(self.inception).to(device))
            out["fid"] = fid(inc, fake, real)
        return out

    @torch.no_grad()
    def figure(self, t, device, k: int = 4) -> torch.Tensor:
        """Rows of LR (nearest) | bicubic | T(LR) | HR on validation images (centre crops of one size)."""
        from otsr.plots import image_rows

        rows, images = [], self.validation_images(device)[:k]
        side = min(min(hr.shape[-2:]) for _, hr in images)
        side -= side % self.scale
        for lr, hr in images:
            lr = lr[..., : side // self.scale, : side // self.scale]
            hr = hr[..., :side, :side]
            rows.append(torch.cat([F.interpolate(lr, size=hr.shape[-2:], mode="nearest"),
                                   upsample_like(lr, hr).clamp(0, 1), t(lr).clamp(0, 1), hr]))
        return image_rows(rows, nrow=4)


__all__ = ["UnpairedSR"]
