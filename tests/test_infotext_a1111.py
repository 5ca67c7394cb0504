"""A1111 infotext conformance: real "parameters" texts written by AUTOMATIC1111's stable-diffusion-webui and Forge,
transcribed from public sources (each case names its source), read by ``sdkit.metadata.parse``.

The expected values are what A1111's own reader (``parse_generation_parameters`` in ``modules/infotext_utils.py``,
plus the txt2img paste rules of ``modules/ui.py``) makes of each text, worked out by hand from its algorithm:

- lines before the last are the prompt, stripped, up to a line starting "Negative prompt:";
- fields split by A1111's ``re_param`` (transcribed below as the oracle for "every field is kept");
- hires fix is on when the text has "Denoising strength" and a Hires field; missing hires fields take the UI
  defaults (upscale 2, steps 0, upscaler "Latent"); "Clip skip" is 1 when absent;
- "First pass size" (A1111 < 1.0): the first pass is that size (0x0: ``old_hires_fix_first_pass_dimensions``,
  512x512 pixels' worth rounded up to 64), "Size" becomes "Hires resize";
- sampler and schedule as A1111 >= 1.9 resolves them ("Automatic" = the sampler's default schedule), written here
  as sdkit's names.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pytest
from PIL import Image as PILImage

from sdkit.hires import HiresFix
from sdkit.metadata import parse

pytestmark = pytest.mark.usefixtures("one_thread")

# A1111 modules/infotext_utils.py: re_param_code (the oracle for which fields a text holds)
A1111_RE_PARAM = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
# the fields sdkit reads and writes itself (normalised: display names, number format, first pass conversion)
SDKIT_FIELDS = {
    "Steps", "Sampler", "Schedule type", "CFG scale", "Seed", "Size", "Model", "Batch size", "Batch pos",
    "Denoising strength", "Clip skip", "ENSD", "Variation seed", "Variation seed strength", "Hires upscale",
    "Hires steps", "Hires upscaler", "Hires resize", "First pass size",
}  # fmt: skip


@dataclass(frozen=True)
class Case:
    name: str
    source: str
    text: str
    expected: dict[str, Any]


def hires(scale: float = 2.0, steps: int = 0, strength: float = 0.7, upscaler: str = "Latent", resize=None) -> Any:
    return HiresFix(scale, steps, strength, upscaler, resize)


def expect(prompt, negative, steps, sampler, schedule, cfg, seed, size, *, clip_skip=1, strength=None, hires=None,
           batch_size=1, model=""):  # fmt: skip
    return dict(
        prompt=prompt, negative_prompt=negative, steps=steps, sampler=sampler, schedule=schedule, cfg=cfg, seed=seed,
        width=size[0], height=size[1], clip_skip=clip_skip, strength=strength, hires=hires, batch_size=batch_size,
        model=model,
    )  # fmt: skip


FORGE_PROMPT = (
    "masterpiece, best quality,high quality, newest, highres,8K,HDR,absurdres, 1boy, solo, Sith, young, "
    "red lightsaber, evil, handsome, hood, long hair, broken battlefield, smoking ruins, defeated dragon "
    "in background, medieval fantasy, determined expression, torn cape, glowing embers, bloodstained "
    "gauntlets, cinematic lighting, dynamic pose, foreshortening, intense depth of field, epic "
    "composition, heroic warrior, gritty realism, medieval battlefield, dust and ash in air, intricate "
    "details, medieval legend aesthetic., detailed background, dynamic pose, dynamic composition,dutch "
    "angle, detailed backgroud,foreshortening,blurry edges,  <lora:iLLMythM4gicalL1nes:1> M4gicalL1nes"
)
RENGET = "github.com/na-na-hi/renget @9bcb5b46 (rentry.org archive)"
CASES = [
    Case(
        "hires_lora_controlnet_vae_v1.6",
        "github.com/ShunsukeNONOMURA/mkdocs-generative-ai volume/docs/300-benchmark/03-benchmark-middle-aged-hatsunemiku-1.md",  # noqa: E501
        "japanese, (middle aged man:1.7), smirk, half open eyes, fat, (ugly:1.2), single, belly is hanging out, "
        "<lora:hatsunemiku1:1> (hatsunemiku:1.5)\n"
        "Negative prompt: EasyNegative, bad-hands-5, woman, girl, suit\n"
        "Steps: 30, Sampler: DPM++ 2M Karras, CFG scale: 7, Seed: 3593958495, Size: 512x768, Model hash: df5522b823, "
        "Model: chilled_remix_v1vae, VAE hash: 551eac7037, VAE: vae-ft-mse-840000-ema-pruned.ckpt, Denoising strength: "
        '0.7, Clip skip: 2, ControlNet: "preprocessor: tile_resample, model: control_v11f1e_sd15_tile [a371b31b], '
        "weight: 1, starting/ending: (0, 1), resize mode: Crop and Resize, pixel perfect: False, control mode: "
        'Balanced, preprocessor params: (512, 1, 64)", Hires upscale: 2, Hires upscaler: R-ESRGAN 4x+, Lora hashes: '
        '"hatsunemiku1: 8ccb2b9adc0a", Version: v1.6.0',
        expect(
            "japanese, (middle aged man:1.7), smirk, half open eyes, fat, (ugly:1.2), single, belly is hanging out, "
            "<lora:hatsunemiku1:1> (hatsunemiku:1.5)",
            "EasyNegative, bad-hands-5, woman, girl, suit",
            30,
            "dpmpp_2m",
            "karras",
            7.0,
            3593958495,
            (512, 768),
            clip_skip=2,
            model="chilled_remix_v1vae",
            hires=hires(2.0, 0, 0.7, "R-ESRGAN 4x+"),
        ),  # fmt: skip
    ),
    Case(
        "no_negative_clip_skip",
        "github.com/ShunsukeNONOMURA/mkdocs-generative-ai volume/docs/300-report/00-benchmark-hatsune-miku-1.md (1)",
        "hatsune miku\n"
        "Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 3272356495, Size: 512x768, Model hash: fe4efff1e1, "
        "Model: sd-v1-4, Clip skip: 2",
        expect(
            "hatsune miku",
            "",
            20,
            "euler_ancestral",
            "normal",
            7.0,
            3272356495,
            (512, 768),
            clip_skip=2,
            model="sd-v1-4",
        ),  # fmt: skip
    ),
    Case(
        "negative_lora_tag",
        "github.com/ShunsukeNONOMURA/mkdocs-generative-ai volume/docs/300-report/00-benchmark-hatsune-miku-1.md (4)",
        "<lora:flat2:-1>, hatsune miku\n"
        "Negative prompt: EasyNegative, bad-hands-5\n"
        "Steps: 30, Sampler: DPM++ 2M Karras, CFG scale: 7, Seed: 673866072, Size: 512x768, Model hash: d124fc18f0, "
        "Model: AOM3, Clip skip: 2",
        expect(
            "<lora:flat2:-1>, hatsune miku",
            "EasyNegative, bad-hands-5",
            30,
            "dpmpp_2m",
            "karras",
            7.0,
            673866072,
            (512, 768),
            clip_skip=2,
            model="AOM3",
        ),  # fmt: skip
    ),
    Case(
        "face_restoration_between_fields",
        "github.com/ShunsukeNONOMURA/mkdocs-generative-ai "
        "volume/docs/300-benchmark/01-benchmark-middle-aged-man-1.md (6)",
        "japanese, (middle aged man:1.2), (bald:1.2), (white tanktop:1.2), dirty skin, Expressionless, (ugly:1.1), "
        "single, (belly is hanging out:1.2), thin eyebrows, facial wrinkles, fat, <lora:flat2:-1>\n"
        "Negative prompt: EasyNegative, bad-hands-5, refreshing, (muscle:1.5)\n"
        "Steps: 30, Sampler: DPM++ 2M Karras, CFG scale: 7, Seed: 4214415218, Face restoration: CodeFormer, "
        "Size: 512x768, Model hash: fe4efff1e1, Model: sd-v1-4, Clip skip: 2",
        expect(
            "japanese, (middle aged man:1.2), (bald:1.2), (white tanktop:1.2), dirty skin, Expressionless, (ugly:1.1), "
            "single, (belly is hanging out:1.2), thin eyebrows, facial wrinkles, fat, <lora:flat2:-1>",
            "EasyNegative, bad-hands-5, refreshing, (muscle:1.5)",
            30,
            "dpmpp_2m",
            "karras",
            7.0,
            4214415218,
            (512, 768),
            clip_skip=2,
            model="sd-v1-4",
        ),  # fmt: skip
    ),
    Case(
        "unipc_json_hashes",
        "github.com/d3x-at/sd-parsers tests/test_automatic1111.py (PARAMETERS + Hashes, test_hashes)",
        "photo of a duck\nNegative prompt: monochrome\n"
        "Steps: 15, Sampler: UniPC, CFG scale: 5, Seed: 235284042, Size: 512x400, "
        'Model hash: c0d1994c73, Model: realistic_realisticVisionV20_v20, Hashes: {"vae": "c6a580b13a", "model": '
        '"c0d1994c73"}',
        expect(
            "photo of a duck",
            "monochrome",
            15,
            "unipc",
            "normal",
            5.0,
            235284042,
            (512, 400),
            model="realistic_realisticVisionV20_v20",
        ),  # fmt: skip
    ),
    Case(
        "sdxl_vae_style_selector",
        "github.com/LykosAI/StabilityMatrix StabilityMatrix.Tests/Models/GenerationParametersTests.cs (TestParse)",
        "test123\nNegative prompt: test, easy negative\n"
        "Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 3589107295, Size: 1024x1028, Model hash: 9aa0c3e54d, "
        "Model: nightvisionXL_v0770_BakedVAE, VAE hash: 235745af8d, VAE: sdxl_vae.safetensors, Style Selector "
        "Enabled: True, Style Selector Randomize: False, Style Selector Style: base, Version: 1.6.0",
        expect(
            "test123",
            "test, easy negative",
            20,
            "euler_ancestral",
            "normal",
            7.0,
            3589107295,
            (1024, 1028),
            model="nightvisionXL_v0770_BakedVAE",
        ),  # fmt: skip
    ),
    Case(
        "schedule_type_ti_hashes_no_prompt_v1.9",
        "github.com/bluelovers/sd-webui-pnginfo-injection tests/test-01.py (test_something3)",
        "Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 557152044, Size: 768x512, Model "
        "hash: 0a880e98ab, Model: meinacetusorionmix_v10, VAE hash: df3c506e51, VAE: kl-f8-anime2.ckpt, Hypertile "
        "U-Net: True, Hypertile VAE: True, ADetailer model: hand_yolov8n.pt, ADetailer confidence 2nd: 0.3, ADetailer "
        "dilate erode 2nd: 4, ADetailer mask blur 2nd: 4, ADetailer denoising strength 2nd: 0.4, ADetailer inpaint "
        "only masked 2nd: True, ADetailer inpaint padding 2nd: 32, ADetailer ControlNet model 2nd: Passthrough, "
        "ADetailer version: 24.6.0, Template Seeds: 557152044, Template Seeds Sub: 1298678300, TI hashes: "
        '"Tower13_Gizelle: 9ece223c52f8, EasyNegative: c74b4e810b03", Hardware Info: "RTX 3060 Ti 8GB, i7-13700, '
        '32GB RAM", Time taken: 22.5 sec., Version: v1.9.4-191-g6ca0466e, Hashes: {"vae": "df3c506e51", '
        '"embed:Tower13_Gizelle": "9ece223c52", "embed:EasyNegative": "c74b4e810b", "model": "0a880e98ab"}',
        expect("", "", 20, "dpmpp_2m", "karras", 7.0, 557152044, (768, 512), model="meinacetusorionmix_v10"),
    ),
    Case(
        "forge_f2_hires_lora",
        "github.com/jim60105/standalone-civitai-shortcut tests/test_exact_auto1111_format.py (expected_format)",
        FORGE_PROMPT + "\n"
        "Negative prompt: worst quality, normal quality, anatomical nonsense, bad anatomy,interlocked fingers, extra "
        "fingers,watermark,simple background, loli,\n"
        "Steps: 35, Sampler: DPM++ 2M SDE, Schedule type: Karras, CFG scale: 4, Seed: 4081830789, Size: 1072x1376, "
        "Model hash: c364bbdae9, Model: waiNSFWIllustrious_v110, Denoising strength: 0.45, Clip skip: 2, ADetailer "
        "model: face_yolov8n.pt, ADetailer confidence: 0.3, ADetailer mask only top k largest: 1, ADetailer dilate "
        "erode: 4, ADetailer mask blur: 4, ADetailer denoising strength: 0.4, ADetailer inpaint only masked: True, "
        "ADetailer inpaint padding: 32, ADetailer version: 24.8.0, Hires upscale: 1.4, Hires steps: 15, Hires "
        'upscaler: 4x-UltraSharp, Lora hashes: "iLLMythM4gicalL1nes: 2248ee0a005f", Version: '
        "f2.0.1v1.10.1-previous-519-g44eb4ea8",
        expect(
            FORGE_PROMPT,
            "worst quality, normal quality, anatomical nonsense, bad anatomy,interlocked fingers, extra "
            "fingers,watermark,simple background, loli,",
            35,
            "dpmpp_2m_sde",
            "karras",
            4.0,
            4081830789,
            (1072, 1376),
            clip_skip=2,
            model="waiNSFWIllustrious_v110",
            hires=hires(1.4, 15, 0.45, "4x-UltraSharp"),
        ),  # fmt: skip
    ),
    Case(
        "variation_seed_batch_hires_no_model_name",
        RENGET + " archive/p9yoo.md lines 927-929",
        "crystal lamp, alien influence, beautiful, organic, geometric, suspended, gem-like, luxury, a gift by the "
        "gods, in the style of kandinsky, an entity from another plane of existence, tiny mirrors, these are not lamps "
        "anymore, I've gone too far, art deco influence,\n"
        "Negative prompt: magenta,\n"
        "Steps: 20, Sampler: Euler a, CFG scale: 10, Seed: 347362242, Size: 256x384, Model hash: 3b82cf84, Batch size: "
        "8, Batch pos: 0, Variation seed: 3034886270, Variation seed strength: 0.5, Denoising strength: 0.7, Hires "
        "upscale: 2, Hires upscaler: Latent",
        expect(
            "crystal lamp, alien influence, beautiful, organic, geometric, suspended, gem-like, luxury, a gift by the "
            "gods, in the style of kandinsky, an entity from another plane of existence, tiny mirrors, these are not "
            "lamps anymore, I've gone too far, art deco influence,",
            "magenta,",
            20,
            "euler_ancestral",
            "normal",
            10.0,
            347362242,
            (256, 384),
            batch_size=8,
            hires=hires(2.0, 0, 0.7, "Latent"),
        ),  # fmt: skip
    ),
    Case(
        "first_pass_size_v0",
        RENGET + " archive/p9yoo.md lines 921-923",
        "masterpiece, high quality, best quality, detailed, (thunderpunk:1.3) landscape, futuristic buildings, light "
        "beams, neon stars, animal metal trap, forest cabin, sequoia trees, industrial megastructure, antennas, smoke, "
        "smog, giant towers, by Marc Simonetti\n"
        "Negative prompt: lowres, (text), error, missing fingers, cropped, worst quality, low quality, jpeg artifacts, "
        "(signature), (watermark), out of frame, (poorly drawn), (mutation), (bad proportions), censored, monochrome, "
        "multiple views, fire\n"
        "Steps: 28, Sampler: Euler a, CFG scale: 12, Seed: 3162999254, Size: 1280x640, Model hash: 6569e224, Model: "
        "Anything-V3.0, Denoising strength: 0.25, Clip skip: 2, ENSD: 31337, First pass size: 1024x512",
        expect(
            "masterpiece, high quality, best quality, detailed, (thunderpunk:1.3) landscape, futuristic buildings, "
            "light beams, neon stars, animal metal trap, forest cabin, sequoia trees, industrial megastructure, "
            "antennas, smoke, smog, giant towers, by Marc Simonetti",
            "lowres, (text), error, missing fingers, cropped, worst quality, low quality, jpeg artifacts, (signature), "
            "(watermark), out of frame, (poorly drawn), (mutation), (bad proportions), censored, monochrome, multiple "
            "views, fire",
            28,
            "euler_ancestral",
            "normal",
            12.0,
            3162999254,
            (1024, 512),
            clip_skip=2,
            model="Anything-V3.0",
            hires=hires(2.0, 0, 0.25, "Latent", (1280, 640)),
        ),  # fmt: skip
    ),
    Case(
        "two_line_prompt_first_pass_auto",
        RENGET + " archive/p9yoo.md lines 938-941",
        "positive prompt: masterpiece, best quality, highest detail, absurdres, 8k, (realistic:1.5) photograph shot by "
        "Peter Lindbergh, epic and gritty composition, red leaves, (easternlite), (red moon, red sky), night, moon "
        "ray, (snowy field), (atmospheric lighting:1.56), moonrays, 1girl, (ponytail, messy fringe, long and messy "
        "bangs), hair_ornament, (beautiful face), intricate and silky skin, (red eyes, intricate eyes, intricate "
        "pupils, sanpaku), (good anatomy), wearing (black kimono, obi, sash, gauntlets, greaves, jewelry), (bandages "
        "wrappings), cowboy shot, dynamic pose, (kill la kill pose),\n"
        "by Andrew Atroshenko and Jeremy Lipking and Antonio J. Manzanedo\n"
        "Negative prompt: ((poorly drawn face)), ((poorly drawn hands)), (((bad anatomy))), ((mutation)), "
        "((mutated)), (((deformed))), ((extra fingers)), mutated hands, (extra limbs), ((poorly drawn)), (extra "
        "hands), (out of frame), out of focus, blurry, conjoined, long neck, watermarks, text, 3d, signature\n"
        "Steps: 20, Sampler: DPM++ 2S a Karras, CFG scale: 10, Seed: 4180137434, Size: 832x1280, Model hash: "
        "b9234c2e, Denoising strength: 0.6, Clip skip: 2, First pass size: 0x0",
        expect(
            "positive prompt: masterpiece, best quality, highest detail, absurdres, 8k, (realistic:1.5) photograph "
            "shot by Peter Lindbergh, epic and gritty composition, red leaves, (easternlite), (red moon, red sky), "
            "night, moon ray, (snowy field), (atmospheric lighting:1.56), moonrays, 1girl, (ponytail, messy fringe, "
            "long and messy bangs), hair_ornament, (beautiful face), intricate and silky skin, (red eyes, intricate "
            "eyes, intricate pupils, sanpaku), (good anatomy), wearing (black kimono, obi, sash, gauntlets, greaves, "
            "jewelry), (bandages wrappings), cowboy shot, dynamic pose, (kill la kill pose),\n"
            "by Andrew Atroshenko and Jeremy Lipking and Antonio J. Manzanedo",
            "((poorly drawn face)), ((poorly drawn hands)), (((bad anatomy))), ((mutation)), ((mutated)), "
            "(((deformed))), ((extra fingers)), mutated hands, (extra limbs), ((poorly drawn)), (extra hands), (out of "
            "frame), out of focus, blurry, conjoined, long neck, watermarks, text, 3d, signature",
            # 0x0: sqrt(512^2 / (832 * 1280)) = 0.4961; ceil(0.4961 * 832 / 64) * 64 = 448, ceil(... * 1280 / 64) = 640
            20,
            "dpmpp_2s_ancestral",
            "karras",
            10.0,
            4180137434,
            (448, 640),
            clip_skip=2,
            hires=hires(2.0, 0, 0.6, "Latent", (832, 1280)),
        ),  # fmt: skip
    ),
    Case(
        "two_line_prompt_hires_steps_ensd",
        RENGET + " archive/p9yoo.md lines 989-992",
        "(masterpiece:1.2), (highest quality:1.2), (8k resolution), (illustration:1.4), colorful, (solo), (1boy),\n"
        "cartoon boy (nerd) angry at his computer, (messy room),\n"
        "Negative prompt: (dof), vignette, camera_blur, nsfw, (worst quality, low quality:1.3), (depth of field, "
        "blurry:1.2), (greyscale, monochrome:1.1), 3D face, nose, cropped, lowres, text, jpeg artifacts, signature, "
        "watermark, username, blurry, artist name, trademark, watermark, title, sd character:1.1), multiple view, "
        "Reference sheet,\n"
        "Steps: 16, Sampler: Euler a, CFG scale: 8.5, Seed: 2143985701, Size: 512x512, Model hash: a87fd7da, "
        "Denoising strength: 0.6, Clip skip: 2, ENSD: 31337, Hires upscale: 2, Hires steps: 20, Hires upscaler: Latent",
        expect(
            "(masterpiece:1.2), (highest quality:1.2), (8k resolution), (illustration:1.4), colorful, (solo), (1boy),\n"
            "cartoon boy (nerd) angry at his computer, (messy room),",
            "(dof), vignette, camera_blur, nsfw, (worst quality, low quality:1.3), (depth of field, blurry:1.2), "
            "(greyscale, monochrome:1.1), 3D face, nose, cropped, lowres, text, jpeg artifacts, signature, watermark, "
            "username, blurry, artist name, trademark, watermark, title, sd character:1.1), multiple view, Reference "
            "sheet,",
            16,
            "euler_ancestral",
            "normal",
            8.5,
            2143985701,
            (512, 512),
            clip_skip=2,
            hires=hires(2.0, 20, 0.6, "Latent"),
        ),  # fmt: skip
    ),
    Case(
        "hires_upscale_2.5",
        RENGET + " archive/p9yoo.md lines 995-997",
        "masterpiece, best quality, [detailed], [intricate], digital painting, fullbody portrait of a female dwarf "
        "cowboy sitting on a porch and playing a guitar, poncho, desert, short, stocky, noble, fantasy, western, "
        "[highres], [absurdres], [sharp focus], bokeh, realistic shadows, lithograph by John William Waterhouse and "
        "Kyoto animation and Yoshitaka Amano and Frank Frazetta\n"
        "Negative prompt: bad anatomy, bad hands, text, error, missing fingers, extra digit, fewer digits, cropped, "
        "signature, watermark, username, blurry, artist name, simple background, [comic panels], [monochrome], [nsfw]\n"
        "Steps: 30, Sampler: DPM++ 2M Karras, CFG scale: 8, Seed: 1577239734, Size: 640x448, Model hash: 53d4559a, "
        "Denoising strength: 0.55, Hires upscale: 2.5, Hires upscaler: Latent",
        expect(
            "masterpiece, best quality, [detailed], [intricate], digital painting, fullbody portrait of a female dwarf "
            "cowboy sitting on a porch and playing a guitar, poncho, desert, short, stocky, noble, fantasy, western, "
            "[highres], [absurdres], [sharp focus], bokeh, realistic shadows, lithograph by John William Waterhouse "
            "and Kyoto animation and Yoshitaka Amano and Frank Frazetta",
            "bad anatomy, bad hands, text, error, missing fingers, extra digit, fewer digits, cropped, signature, "
            "watermark, username, blurry, artist name, simple background, [comic panels], [monochrome], [nsfw]",
            30,
            "dpmpp_2m",
            "karras",
            8.0,
            1577239734,
            (640, 448),
            hires=hires(2.5, 0, 0.55, "Latent"),
        ),  # fmt: skip
    ),
    Case(
        "embedding_tag_first_pass_auto",
        RENGET + " archive/p9yoo.md lines 1008-1010",
        "1girl, solo, niijima makoto,night, <makotonijima-750>, red eyes, medium hair, smile, parted lips, upper "
        "body,\n"
        "Negative prompt: <bad-artist>, texture, halftone\n"
        "Steps: 30, Sampler: DPM++ 2M Karras, CFG scale: 9, Seed: 898894642, Size: 768x1024, Model hash: c34daf90, "
        "Denoising strength: 0.7, Clip skip: 2, ENSD: 31337, First pass size: 0x0",
        expect(
            "1girl, solo, niijima makoto,night, <makotonijima-750>, red eyes, medium hair, smile, parted lips, upper "
            "body,",
            "<bad-artist>, texture, halftone",
            # 0x0: sqrt(512^2 / (768 * 1024)) = 0.5774; ceil(0.5774 * 768 / 64) * 64 = 448, ceil(... * 1024 / 64) = 640
            30,
            "dpmpp_2m",
            "karras",
            9.0,
            898894642,
            (448, 640),
            clip_skip=2,
            hires=hires(2.0, 0, 0.7, "Latent", (768, 1024)),
        ),  # fmt: skip
    ),
    Case(
        "addnet_ensd_unknown_upscaler",
        RENGET + " archive/p9yoo.md lines 1037-1039",
        "masterpiece, best quality, detailed, anton fadeev, greg manchess, cyberpunk dante, devil may cry, 1boy, red "
        "long coat, full body, cyberpunk, techwear, street, neon sign, neon_lights, looking away, water reflection, "
        "scenery, starry sky, from behind\n"
        "Negative prompt: girl, lowres, bad anatomy, bad hands, text, error, missing fingers, extra digit, fewer "
        "digits, cropped, worst quality, low quality, normal quality, jpeg artifacts, ((signature)), watermark, "
        "username, blurry, bad feet, pointy ears\n"
        "Steps: 20, Sampler: DPM++ SDE Karras, CFG scale: 8.5, Seed: 2536398408, Size: 512x768, Model hash: 0d571ebc, "
        "Denoising strength: 0.55, ENSD: 331337, AddNet Enabled: True, AddNet Module 1: LoRA, AddNet Model 1: "
        "dante_devil_may_cry1e-4(3778e646), AddNet Weight 1: 0.7, Hires upscale: 2, Hires upscaler: lollypop",
        expect(
            "masterpiece, best quality, detailed, anton fadeev, greg manchess, cyberpunk dante, devil may cry, 1boy, "
            "red long coat, full body, cyberpunk, techwear, street, neon sign, neon_lights, looking away, water "
            "reflection, scenery, starry sky, from behind",
            "girl, lowres, bad anatomy, bad hands, text, error, missing fingers, extra digit, fewer digits, cropped, "
            "worst quality, low quality, normal quality, jpeg artifacts, ((signature)), watermark, username, blurry, "
            "bad feet, pointy ears",
            20,
            "dpmpp_sde",
            "karras",
            8.5,
            2536398408,
            (512, 768),
            hires=hires(2.0, 0, 0.55, "lollypop"),
        ),  # fmt: skip
    ),
    Case(
        "cjk_lora_name_hires_1.55",
        RENGET + " archive/sdg-lora-motherload.md lines 237-241 (rentry '!!! info' markup and blank lines removed)",
        "masterpiece, best quality, 8k,absurdres, 1girl,evil smile,\n"
        "Negative prompt: lowres, bad anatomy, bad hands, text, error, missing fingers, extra digit, fewer digits, "
        "cropped, worst quality, low quality, normal quality, jpeg artifacts, signature, watermark, username, blurry\n"
        "Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 797127724, Size: 512x760, Model hash: 0fc198c490, Denoising "
        "strength: 0.54, ENSD: 31337, AddNet Enabled: True, AddNet Module 1: LoRA, AddNet Model 1: 表情(fa80d41b67c3), "
        "AddNet Weight A 1: 1, AddNet Weight B 1: 1, Hires upscale: 1.55, Hires upscaler: R-ESRGAN General WDN 4xV3",
        expect(
            "masterpiece, best quality, 8k,absurdres, 1girl,evil smile,",
            "lowres, bad anatomy, bad hands, text, error, missing fingers, extra digit, fewer digits, cropped, worst "
            "quality, low quality, normal quality, jpeg artifacts, signature, watermark, username, blurry",
            20,
            "euler_ancestral",
            "normal",
            7.0,
            797127724,
            (512, 760),
            hires=hires(1.55, 0, 0.54, "R-ESRGAN General WDN 4xV3"),
        ),  # fmt: skip
    ),
    Case(
        "break_seed_0_regional_prompter_v1.4",
        RENGET + " archive/zp7g6.md lines 37-39",
        "masterpiece, best quality, 1girl, solo <lora:ex_lora_unet-1e-3_te-1e-4_dim-8_alpha-8:1> BREAK\n"
        "Negative prompt: worst quality, nsfw\n"
        "Steps: 20, Sampler: DPM++ 2M Karras, CFG scale: 7, Seed: 0, Size: 640x960, Model hash: 30b5268da4, Model: "
        "Based64mix-V3_ema-560000_fp16, Clip skip: 2, RP Active: True, RP Divide mode: Matrix, RP Matrix submode: "
        "Horizontal, RP Mask submode: Mask, RP Prompt submode: Prompt, RP Calc Mode: Latent, RP Ratios: 1, RP Base "
        "Ratios: 0.2, RP Use Base: False, RP Use Common: False, RP Use Ncommon: False, RP Change AND: False, RP LoRA "
        "Neg Te Ratios: 0, RP LoRA Neg U Ratios: 0, RP threshold: 0.4, Lora hashes: "
        '"ex_lora_1024px_1e-3_dim-8_alpha-8: xxx", Version: v1.4.0',
        expect(
            "masterpiece, best quality, 1girl, solo <lora:ex_lora_unet-1e-3_te-1e-4_dim-8_alpha-8:1> BREAK",
            "worst quality, nsfw",
            20,
            "dpmpp_2m",
            "karras",
            7.0,
            0,
            (640, 960),
            clip_skip=2,
            model="Based64mix-V3_ema-560000_fp16",
        ),  # fmt: skip
    ),
    Case(
        "hires_resize_crop",
        RENGET + " archive/sdg-motherload.md lines 322-326 (rentry '!!! info' markup and blank lines removed)",
        "<lora:dalcefoPainting_LoRA300:1>dalcefo realistic, painting, portrait of a girl\n"
        "Negative prompt: (worst quality, low quality:1.4),\n"
        "Steps: 20, Sampler: Euler a, CFG scale: 4.5, Seed: 1265955499, Size: 448x640, Model hash: 0432e71c84, "
        "Denoising strength: 0.5, Clip skip: 2, Hires resize: 768x1024, Hires upscaler: 4x_Anime_Rescaler_100000_G",
        expect(
            "<lora:dalcefoPainting_LoRA300:1>dalcefo realistic, painting, portrait of a girl",
            "(worst quality, low quality:1.4),",
            20,
            "euler_ancestral",
            "normal",
            4.5,
            1265955499,
            (448, 640),
            clip_skip=2,
            hires=hires(2.0, 0, 0.5, "4x_Anime_Rescaler_100000_G", (768, 1024)),
        ),  # fmt: skip
    ),
    Case(
        "civitai_field_order_model_with_spaces",
        "github.com/wudg/blogs source/_posts/AI_SD出图记录.md (提示词3)",
        "1girl, (hanfu), sidelighting, wallpaper,\n"
        "Negative prompt: (worst quality, low quality:1.4), (zombie, sketch, interlocked fingers, comic),\n"
        "Steps: 40, Size: 512x1024, Seed: 1616786217, Model: Meina V10 - baked VAE, Version: v1.2.1, Sampler: DPM++ "
        "SDE Karras, CFG scale: 7, Clip skip: 2, Model hash: 77b7dc4ef0, Hires steps: 15, Hires upscale: 2, Hires "
        "upscaler: R-ESRGAN 4x+ Anime6B, Denoising strength: 0.4",
        expect(
            "1girl, (hanfu), sidelighting, wallpaper,",
            "(worst quality, low quality:1.4), (zombie, sketch, interlocked fingers, comic),",
            40,
            "dpmpp_sde",
            "karras",
            7.0,
            1616786217,
            (512, 1024),
            clip_skip=2,
            model="Meina V10 - baked VAE",
            hires=hires(2.0, 15, 0.4, "R-ESRGAN 4x+ Anime6B"),
        ),  # fmt: skip
    ),
    Case(
        "api_denoising_without_hires_seed_resize_unset",
        "https://github.com/capslock/stable-diffusion-bot/issues/7",
        "dress, black hair, seashore\n"
        "Negative prompt: easynegative, worst quality, bad-hands-5, bad-artist bad_prompt_version2:0.5, 3 hands, "
        "3 legs\n"
        "Steps: 20, Sampler: DPM++ 2M Karras, CFG scale: 5.0, Seed: 3804583583, Size: 512x768, Model hash: 4cf7896571, "
        "Model: anime_world_by_Timmek, Seed resize from: -1x-1, Denoising strength: 0",
        # no hires field: "Denoising strength" is img2img's (A1111 ignores it in txt2img)
        expect(
            "dress, black hair, seashore",
            "easynegative, worst quality, bad-hands-5, bad-artist bad_prompt_version2:0.5, 3 hands, 3 legs",
            20,
            "dpmpp_2m",
            "karras",
            5.0,
            3804583583,
            (512, 768),
            strength=0.0,
            model="anime_world_by_Timmek",
        ),
    ),  # fmt: skip
]
IDS = [c.name for c in CASES]


def test_cases_cover_the_features():
    texts = "\n".join(c.text for c in CASES)
    for feature in ("Hires upscale", "Hires steps", "Hires resize", "Lora hashes", "TI hashes", "Schedule type",
                    "Version: f2", "Clip skip", "VAE hash", "ENSD", "Model hash", "Version: v1", "表情",
                    "First pass size", "Variation seed"):  # fmt: skip
        assert feature in texts, feature
    assert len(CASES) >= 15
    assert sum("\n" in c.expected["prompt"] for c in CASES) >= 2  # multi-line prompts


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_parse_gives_a1111_values(case: Case):
    params = parse(case.text)
    got = {key: getattr(params, key) for key in case.expected}
    assert got == case.expected


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_every_field_a1111_wrote_is_written_back(case: Case):
    params = parse(case.text)
    text = params.infotext()
    assert parse(text) == params
    original, rewritten = case.text.split("\n")[-1], text.split("\n")[-1]
    positions = []
    for m in A1111_RE_PARAM.finditer(original):
        if m.group(1) not in SDKIT_FIELDS:
            written = original[m.start(1) : m.end(2)]  # "Key: value" exactly as A1111 wrote it
            assert written in rewritten, written
            positions.append(rewritten.index(written))
    assert positions == sorted(positions)  # in their order


def _small(params: Any) -> dict[str, Any]:
    """The parsed generate() arguments at a size and step count the tiny model runs in a moment."""
    kwargs = params.generate_kwargs()
    kwargs.update(width=32, height=32, steps=2, batch_size=min(params.batch_size, 2))
    if params.hires is not None:
        h = params.hires
        resize = None if h.resize_to is None else (48 if h.resize_to[0] else 0, 40 if h.resize_to[1] else 0)
        kwargs["hires"] = replace(h, scale=1.5, steps=min(h.steps, 2), resize_to=resize)
    if params.strength is not None:  # img2img's strength: it needs an image
        kwargs["init_image"] = PILImage.new("RGB", (32, 32), (120, 140, 160))
    return kwargs


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_parsed_text_generates(tiny_sd1_kit, case: Case):
    params = parse(case.text)
    kwargs = _small(params)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gen = tiny_sd1_kit.generate(**kwargs)
    messages = [str(w.message) for w in caught]
    if params.model:
        assert any(params.model in m for m in messages)  # the Model field only warns
    if params.hires is not None and params.hires.upscaler not in ("Latent", "Lanczos", "None", "Nearest"):
        assert any(params.hires.upscaler in m and "Lanczos" in m for m in messages)
        assert gen.parameters.hires is not None and gen.parameters.hires.upscaler == "Lanczos"
    image = np.asarray(gen.images[0])
    assert np.isfinite(image).all() and len(gen.images) == kwargs["batch_size"]
    if params.hires is not None:
        hires = kwargs["hires"]
        (_, _), (w, h) = hires.target_size(32, 32)
        assert gen.images[0].size == (w // 8 * 8, h // 8 * 8)
