"""The unpaired ×scale SR problem as a Pair: P = LR crops, Q = HR crops (no true map), plus the paired
validation set on which PSNR/SSIM (and LPIPS with local weights) are measured; FID (with local weights) compares
T(LR crops) with HR crops."""

from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path

import torch
import torch.nn.functional as F

from otsr.costs import upsample_like
from otsr.pairs import FeatureMetric, Pair, ValidationMetrics
from otsr.sr.data import CropStream, check_min_size, list_images, paired_validation, read_image
from otsr.sr.demo import build_demo, default_demo_root
from otsr.sr.image_metrics import FIDInception, LPIPSMetric, psnr, ssim


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
    inception: str = ""  # local FID Inception weights (pytorch-fid's pt_inception-2015-12-05 .pth): enables FID
    lpips_alexnet: str = ""  # local torchvision alexnet weights: enables LPIPS (heads ship with the lpips package)
    seed: int = 0  # crop positions and augmentation

    def __post_init__(self):
        self.check_dim(self.hr_crop, key="hr_crop")
        if self.scale < 2 or self.hr_crop % self.scale:
            raise ValueError(f"pair {self.name!r}: hr_crop={self.hr_crop} must be a multiple of "
                             f"scale={self.scale} >= 2")
        root = build_demo(default_demo_root(self.scale), self.scale) if self.root == "demo" else Path(self.root)
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
        self.reference_files = list_images(root / "train_lr_hr") if (root / "train_lr_hr").is_dir() else []

    @property
    def shape(self):
        """LR crops (3, hr_crop / scale, hr_crop / scale)."""
        s = self.hr_crop // self.scale
        return (3, s, s)

    @property
    def shape_q(self):
        """HR crops (3, hr_crop, hr_crop)."""
        return (3, self.hr_crop, self.hr_crop)

    @contextlib.contextmanager
    def evaluation_samples(self, seed: int):
        """Fresh crop streams seeded by ``seed``: every evaluation sees the same LR and HR crops."""
        train = self._lr, self._hr
        self._lr = CropStream(self.lr_files, self.hr_crop // self.scale, workers=self.workers,
                              crops_per_image=self.crops_per_image, seed=seed * 7919 + 2)
        self._hr = CropStream(self.hr_files, self.hr_crop, workers=self.workers,
                              crops_per_image=self.crops_per_image, seed=seed * 7919 + 3)
        try:
            yield
        finally:
            self._lr, self._hr = train

    def sample_p(self, n, generator):
        """LR crops from the decoding workers (their own seeded RNG; the generator only sets the device)."""
        return self._lr.take(n, generator.device)

    def sample_q(self, n, generator):
        """HR crops, independent of the LR ones."""
        return self._hr.take(n, generator.device)

    def content_reference(self, n, generator):
        """HR crops of the LR pool's originals (``train_lr_hr``), when the dataset has them (the demo set does)."""
        if not self.reference_files:
            return None
        stream = CropStream(self.reference_files, self.hr_crop, workers=0, crops_per_image=self.crops_per_image,
                            seed=self.seed + 5)
        return stream.take(n, generator.device)

    def var_q(self) -> float:
        """Var(Q) estimated once on 256 HR crops."""
        if self._var_q is None:
            y = self._hr.take(256, "cpu").flatten(1)
            self._var_q = float(y.var(0).sum())
        return self._var_q

    def metric_notes(self) -> dict[str, str]:
        """Metrics that cannot be computed, with the reason (never faked)."""
        notes = {"l2_uvp": "unavailable: real unpaired data has no known OT map"}
        if not self.inception:
            notes["fid"] = "unavailable: no local FID Inception weights given (pair parameter 'inception')"
        if not self.lpips_alexnet:
            notes["lpips"] = "unavailable: no local AlexNet weights given (pair parameter 'lpips_alexnet')"
        return notes

    def validation_images(self, device, limit: int = 0):
        """Yield (LR, HR) float tensors (1, 3, h, w) in [0, 1], one pair at a time (centre-cropped when
        ``valid_crop`` is set); ``limit`` > 0 stops after that many."""
        for lr_file, hr_file in self.valid[:limit] if limit else self.valid:
            lr, hr = read_image(lr_file).float()[None] / 255, read_image(hr_file).float()[None] / 255
            if self.valid_crop:
                c, s = self.valid_crop, self.scale
                h0, w0 = max(0, (lr.shape[-2] - c // s) // 2), max(0, (lr.shape[-1] - c // s) // 2)
                lr = lr[..., h0:h0 + c // s, w0:w0 + c // s]
                hr = hr[..., h0 * s:h0 * s + c, w0 * s:w0 * s + c]
            yield lr.to(device), hr.to(device)

    def metrics(self) -> list:
        """PSNR/SSIM of T(LR) and of bicubic on the validation pairs (LPIPS with AlexNet weights); FID with the
        FID Inception weights."""
        names = ("psnr", "ssim", "psnr_bicubic", "ssim_bicubic") + (("lpips",) if self.lpips_alexnet else ())
        out = [ValidationMetrics(names, self.validation_metrics)]
        if self.inception:
            out.append(FeatureMetric("fid", self._fid_features))
        return out

    def _feature(self, key: str, build):
        if key not in self._features:
            self._features[key] = build()
        return self._features[key]

    @torch.no_grad()
    def validation_metrics(self, t, device, limit: int = 0) -> dict[str, float]:
        """PSNR/SSIM (and LPIPS) of T(LR) and of bicubic against the paired HR images, one image at a time."""
        sums = dict.fromkeys(("psnr", "ssim", "psnr_bicubic", "ssim_bicubic") + (("lpips",) if self.lpips_alexnet
                                                                                 else ()), 0.0)
        lpips = self._feature(("lpips", str(device)), lambda: LPIPSMetric(self.lpips_alexnet).to(device)) \
            if self.lpips_alexnet else None
        n = 0
        for lr, hr in self.validation_images(device, limit):
            sr = t(lr).float().clamp(0, 1)
            bic = upsample_like(lr, hr).clamp(0, 1)
            sums["psnr"] += float(psnr(sr, hr).sum())
            sums["ssim"] += float(ssim(sr, hr).sum())
            sums["psnr_bicubic"] += float(psnr(bic, hr).sum())
            sums["ssim_bicubic"] += float(ssim(bic, hr).sum())
            if lpips is not None:
                sums["lpips"] += float(lpips(sr, hr).sum())
            n += 1
        return {k: v / n for k, v in sums.items()}

    def _fid_features(self, device):
        """FID: T(LR crops) and HR crops in the FID Inception network's pool3 space."""
        net = self._feature(("fid", str(device)), lambda: FIDInception(self.inception).to(device))
        return lambda z: net(z.float().clamp(0, 1))

    @torch.no_grad()
    def figure(self, t, device, k: int = 4) -> torch.Tensor:
        """Rows of LR (nearest) | bicubic | T(LR) | HR on validation images (centre crops of one size)."""
        from otsr.plots import image_rows

        images = list(self.validation_images(device, k))
        side = min(min(hr.shape[-2:]) for _, hr in images)
        side -= side % self.scale
        rows = []
        for lr, hr in images:
            lr = lr[..., : side // self.scale, : side // self.scale]
            hr = hr[..., :side, :side]
            rows.append(torch.cat([F.interpolate(lr, size=hr.shape[-2:], mode="nearest"),
                                   upsample_like(lr, hr).clamp(0, 1), t(lr).float().clamp(0, 1), hr]))
        return image_rows(rows, nrow=4)


__all__ = ["UnpairedSR"]
