"""Image conditioning: init images, masks, outpainting canvases, depth maps, poses and ControlNets.

Each conditioner turns what a user holds (a PIL image, an array, OpenPose JSON) into what a recipe in
``sdkit.recipes`` consumes. Nothing here reads files: ControlNets and MiDaS load through ``sdkit.loading``
(``load_controlnet``, ``load_midas``); OpenCV is imported when used.
"""

from sdkit.conditioners.controlnet import Control, ControlledDenoiser, as_control, controlled
from sdkit.conditioners.depth import MidasDepth, depth_image
from sdkit.conditioners.image_input import InitImage, SizePolicy, as_image, fit_size, to_image
from sdkit.conditioners.masks import (
    Mask,
    MaskedContent,
    as_mask,
    fill_masked,
    latent_mask,
    masked,
    paste_back,
    prepare_mask,
)
from sdkit.conditioners.outpaint import Canvas, extend_canvas
from sdkit.conditioners.pose import Pose, openpose_image, parse_openpose, pose_editor, pose_image, render_pose

__all__ = [
    "Canvas",
    "Control",
    "ControlledDenoiser",
    "InitImage",
    "Mask",
    "MaskedContent",
    "MidasDepth",
    "Pose",
    "SizePolicy",
    "as_control",
    "as_image",
    "as_mask",
    "controlled",
    "depth_image",
    "extend_canvas",
    "fill_masked",
    "fit_size",
    "latent_mask",
    "masked",
    "openpose_image",
    "parse_openpose",
    "paste_back",
    "pose_editor",
    "pose_image",
    "prepare_mask",
    "render_pose",
    "to_image",
]
