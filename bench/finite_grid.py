"""Issue 9's numerics sweep, in full: every sampler x every schedule x {1, 2, 3, 20} steps x strengths
{0, 0.01, 0.5, 1} through the img2img recipe on the tiny random SD1 model; counts non-finite outputs.

    python bench/finite_grid.py            # a few minutes on a 2-core CPU; tests/test_numerics.py runs a subset

Strength 1 is txt2img (pure noise at the first sigma); strength 0 returns the VAE round trip.
"""

from __future__ import annotations

import tempfile
import time
import warnings

import torch


def main() -> None:
    import sdkit
    from sdkit import recipes, samplers
    from sdkit.image import Image
    from sdkit.schedules import SCHEDULES, make_sigmas
    from sdkit.testing import save_tiny_model

    torch.set_num_threads(1)
    kit = sdkit.load(str(save_tiny_model(tempfile.mkdtemp() + "/tiny", "sd1")))
    cond, uncond = kit.prompts.encode_pair("a red circle", "blurry")
    init = Image(torch.linspace(0, 1, 64 * 64 * 3).reshape(1, 3, 64, 64))
    runs, bad, t0 = 0, [], time.perf_counter()
    for sampler in sorted(samplers.SAMPLERS):
        for schedule in SCHEDULES:
            for n in (1, 2, 3, 20):
                sigmas = make_sigmas(schedule, n, kit.denoiser.schedule)
                for strength in (0.0, 0.01, 0.5, 1.0):
                    with warnings.catch_warnings():
                        warnings.simplefilter("error")  # a log(0) or overflow warning counts as a failure
                        try:
                            latents = recipes.img2img(
                                kit.denoiser,
                                kit.vae,
                                init,
                                cond,
                                uncond,
                                sigmas=sigmas,
                                strength=strength,
                                sampler=sampler,
                                seed=n,
                            )
                            ok = bool(torch.isfinite(latents.tensor).all())
                            ok = ok and bool(torch.isfinite(kit.vae.decode(latents).tensor).all())
                        except (FloatingPointError, RuntimeWarning) as e:
                            ok = False
                            print("error", sampler, schedule, n, strength, e)
                    runs += 1
                    if not ok:
                        bad.append((sampler, schedule, n, strength))
        print(f"{sampler}: {runs} runs so far, {len(bad)} non-finite", flush=True)
    print(
        f"{runs} runs ({len(samplers.SAMPLERS)} samplers x {len(SCHEDULES)} schedules x 4 step counts x 4 "
        f"strengths) in {time.perf_counter() - t0:.0f} s: {len(bad)} with non-finite outputs {bad[:10]}"
    )


if __name__ == "__main__":
    main()
