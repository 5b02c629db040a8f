"""`ptta sample`: prompts -> mp4 and GIF with a trained adapter (or an exported LoRA, or none)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ptta.rendering import DEFAULT_FLOW_SHIFT, DEFAULT_GUIDANCE, DEFAULT_STEPS, resolve_adapter_dir
from ptta.sample.generate import generate_videos
from ptta.torch_runtime import DTYPES
from ptta.train.heads import parse_head_weights


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("prompts", nargs="*", help="prompts (or use --prompts-file)")
    parser.add_argument("--prompts-file", help="text file with one prompt per line (default: none)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--model", default="tiny", help="diffusers HunyuanVideo directory, or 'tiny' (default)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--adapter", help="HydraLoRA adapter folder, or a `ptta train` output folder")
    source.add_argument("--lora", help="LoRA file (or PEFT folder) in any `ptta export` format: diffusers "
                                       "(lora_diffusers.safetensors), peft, original (diffusion-pipe), kohya")
    parser.add_argument("--heads", help="head weights, e.g. 0.7,0.3,0,0: replace the adapter's mixing, or for an "
                        "adapter trained with caption heads, the weights each prompt's words give (the default)")
    parser.add_argument("--merge", action="store_true",
                        help="fold the adapter into the base weights first (a little faster per step). Caution: "
                             "on a GPU the base weights are bf16 (about 3 significant digits), so adding the small "
                             "delta training makes (lr 2e-5) rounds it and videos drift from the unmerged "
                             "adapter's; sample unmerged (the default) to judge an adapter")
    parser.add_argument("--seeds", default="0",
                        help="comma-separated seeds, one video per prompt and seed (default %(default)s)")
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS, help="denoising steps (default %(default)s)")
    parser.add_argument("--guidance", type=float, default=DEFAULT_GUIDANCE,
                        help="embedded guidance scale (default %(default)s)")
    parser.add_argument("--flow-shift", type=float, default=DEFAULT_FLOW_SHIFT,
                        help="the flow-matching scheduler's time shift (default %(default)s)")
    parser.add_argument("--height", type=int, default=448, help="pixels, a multiple of 16 (default %(default)s)")
    parser.add_argument("--width", type=int, default=800, help="pixels, a multiple of 16 (default %(default)s)")
    parser.add_argument("--frames", type=int, default=33, help="frames per video, 4k+1 (default %(default)s)")
    parser.add_argument("--fps", type=float, default=None,
                        help="frame rate of the videos (default: the adapter's or LoRA's training fps, recorded "
                             "in its text_encoding.json, else 24)")
    parser.add_argument("--no-gif", action="store_true", help="write mp4 only (default: an mp4 and a GIF each)")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--vae-dtype", default="auto", choices=DTYPES,
                        help="VAE dtype (default auto: float16 on a GPU as HunyuanVideo, float32 on a CPU)")
    parser.add_argument("--max-sequence-length", type=int, default=None,
                        help="Llama prompt tokens after the template (default: what the adapter or LoRA was "
                             "trained with, recorded in its text_encoding.json, else 256)")


def run(args: argparse.Namespace) -> int:
    from hydralora import HydraMergeError

    try:
        prompts = list(args.prompts)
        if args.prompts_file:
            path = Path(args.prompts_file)
            if path.is_dir():
                raise FileNotFoundError(f"--prompts-file {path}: is a directory; expected a text file")
            if not path.is_file():
                raise FileNotFoundError(f"--prompts-file {path}: no such file")
            prompts += [line.strip() for line in path.read_text().splitlines() if line.strip()]
        seeds = _parse_seeds(args.seeds)
        heads = parse_head_weights(args.heads) if args.heads else None
        paths = generate_videos(
            prompts, args.out, model=args.model, adapter=args.adapter, lora=args.lora, head_weights=heads,
            merge=args.merge, seeds=seeds, steps=args.steps, guidance=args.guidance, flow_shift=args.flow_shift,
            height=args.height, width=args.width, frames=args.frames, fps=args.fps, gif=not args.no_gif,
            device=args.device, vae_dtype=args.vae_dtype, max_sequence_length=args.max_sequence_length,
        )
    except HydraMergeError as exc:
        print(f"ptta sample: {_merge_advice(exc, args)}", file=sys.stderr)
        return 2
    except (ValueError, FileNotFoundError) as exc:
        print(f"ptta sample: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {len(paths)} video(s) to {args.out}")
    return 0


def _merge_advice(error: Exception, args: argparse.Namespace) -> str:
    """hydralora's merge error in the command line's terms: a router adapter merges once --heads pins
    one mix (its message names the Python call, set_head_weights)."""
    if "router" not in str(error) or args.heads:
        return str(error)
    import hydralora

    heads = hydralora.HydraConfig.load(resolve_adapter_dir(args.adapter)).num_heads
    example = ",".join([f"{1 / heads:.2g}"] * heads)
    return (f"--merge: {args.adapter} mixes its {heads} heads with a per-token router, which changes with every "
            f"token and cannot be folded into the weights. Pin one mix with --heads, e.g. --heads {example} "
            f"--merge, or sample without --merge (the router then mixes per token)")


def _parse_seeds(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",")]
    except ValueError as exc:
        raise ValueError(f"--seeds: expected comma-separated integers like 0,1,2, got {text!r}") from exc
