"""Training objectives: rectified flow (how HunyuanVideo was trained) and DDPM epsilon prediction.

Flow: x_t = (1 - sigma) x0 + sigma * noise, the model predicts the velocity noise - x0, and is
told timestep = 1000 * sigma. sigma is drawn logit-normal (sigmoid of N(mean, std)), uniform, or
uniform then shifted: sigma = s u / (1 + (s - 1) u), which moves mass towards noise for s > 1.

Epsilon (the paper's Eq. 2, for DDPM-parameterised models): t ~ U{0..999},
z_t = sqrt(abar_t) z0 + sqrt(1 - abar_t) noise, target = noise, with the "scaled linear" betas of
latent diffusion (0.00085 .. 0.012). HunyuanVideo itself needs the flow objective.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ptta.config import TrainingConfig

NUM_TRAIN_TIMESTEPS = 1000
DDPM_BETA_START, DDPM_BETA_END = 0.00085, 0.012


@dataclass
class NoisyBatch:
    noisy: torch.Tensor      # model input, like x0
    timestep: torch.Tensor   # (B,) in [0, 1000]
    target: torch.Tensor     # what the model output is compared with


def sample_sigmas(batch_size: int, config: TrainingConfig, generator: torch.Generator) -> torch.Tensor:
    """(B,) noise levels in (0, 1) drawn as `config.sigma_sampling` says."""
    if config.sigma_sampling == "logit_normal":
        normal = torch.randn(batch_size, generator=generator) * config.logit_std + config.logit_mean
        return torch.sigmoid(normal)
    uniform = torch.rand(batch_size, generator=generator)
    if config.sigma_sampling == "uniform":
        return uniform
    shift = config.shift
    return shift * uniform / (1 + (shift - 1) * uniform)


def ddpm_alphas_cumprod() -> torch.Tensor:
    betas = torch.linspace(DDPM_BETA_START ** 0.5, DDPM_BETA_END ** 0.5, NUM_TRAIN_TIMESTEPS, dtype=torch.float64) ** 2
    return torch.cumprod(1.0 - betas, dim=0).float()


def make_noisy_batch(x0: torch.Tensor, config: TrainingConfig, generator: torch.Generator) -> NoisyBatch:
    """Noise clean latents x0 (B, C, T, H, W) for one step; all randomness comes from `generator`."""
    batch = x0.shape[0]
    noise = torch.randn(x0.shape, generator=generator, dtype=torch.float32).to(x0.device)
    view = (batch,) + (1,) * (x0.dim() - 1)
    if config.objective == "flow":
        sigma = sample_sigmas(batch, config, generator).to(x0.device)
        s = sigma.view(view)
        return NoisyBatch((1 - s) * x0 + s * noise, sigma * NUM_TRAIN_TIMESTEPS, noise - x0)
    t = torch.randint(0, NUM_TRAIN_TIMESTEPS, (batch,), generator=generator)
    abar = ddpm_alphas_cumprod()[t].to(x0.device).view(view)
    noisy = abar.sqrt() * x0 + (1 - abar).sqrt() * noise
    return NoisyBatch(noisy, t.float().to(x0.device), noise)
