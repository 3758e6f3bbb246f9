"""Stored settings: one PropertyGroup per owner (strip, scene, add-on preferences).

The style weight is the exception: it is a ``FloatProperty`` registered directly on the
strip type, because a property inside a PropertyGroup pointer on a strip cannot be
keyframed (the strip's RNA path does not extend into the group, so ``keyframe_insert``
and the UI's "Insert Keyframe" both fail); a property on the strip itself can.

No ``from __future__ import annotations`` here: Blender reads the property annotations
of these classes as objects, so they must not become strings.
"""

import bpy
from bpy.props import BoolProperty, CollectionProperty, EnumProperty, FloatProperty, IntProperty, PointerProperty, StringProperty

from . import vse

# Attribute names on the strip type; the F-curve of the weight is found by this name.
STRIP_SETTINGS = "stylecore"
STYLE_WEIGHT = "stylecore_style_weight"
SCENE_SETTINGS = "stylecore"

MODE_ITEMS = (
    ("FEEDFORWARD", "Feedforward Model", "Fast: a trained network for one style (the shipped model by default)"),
    ("OPTIMIZATION", "Optimization", "Slow, any style image: optimise every frame (Gatys/Ruder)"),
    ("STYLE_VIDEO", "Style Video", "Optimise every frame towards the matching frame of a style video"),
)
STYLE_SOURCE_ITEMS = (
    ("FILE", "File", "A style image (or, for Style Video, a video file or image folder)"),
    ("STRIP", "Strip", "A movie or image strip of this scene"),
)
PRESERVE_ITEMS = (
    ("NONE", "None", "Take the colours of the style"),
    ("LUMINANCE", "Luminance", "Stylize brightness only; keep the original colours"),
    ("HISTOGRAM", "Histogram", "Match the style's colours to the original's before stylizing"),
)
# The engine's loss_net names (stylecore/contract.py) as identifiers: jobs.LOSS_NETS maps them back.
LOSS_NET_ITEMS = (
    ("AUTO", "Automatic", "ImageNet VGG19 if the worker has its weights, else HED VGG16"),
    ("HED_VGG16", "HED VGG16", "ImageNet VGG16 from the HED edge detector: installs from the package index"),
    ("VGG19", "ImageNet VGG19", "The reference network of Gatys et al. (548 MB download)"),
    ("RANDOM_VGG19", "Random VGG19 (low quality)", "No weights needed; moves colours and texture only"),
)
# Training length presets: the engine's TrainJob quality names (training/job.py).
QUALITY_ITEMS = (
    ("DRAFT", "Draft", "Shortest training (300 steps): shows the style, rough details"),
    ("GOOD", "Good", "1500 steps: good for most shots"),
    ("BEST", "Best", "4000 steps: the quality of the shipped models"),
)
DEVICE_ITEMS = (
    ("AUTO", "Automatic", "CUDA if available, then Apple MPS, then the CPU"),
    ("CPU", "CPU", "Always use the processor"),
    ("CUDA", "CUDA", "An NVIDIA GPU"),
    ("MPS", "Apple MPS", "An Apple silicon GPU"),
)


class StylecoreStripSettings(bpy.types.PropertyGroup):
    """Per-strip style settings, and for a result strip the link back to its source."""

    mode: EnumProperty(name="Mode", items=MODE_ITEMS, default="FEEDFORWARD")
    style_source: EnumProperty(name="Style From", items=STYLE_SOURCE_ITEMS, default="FILE")
    style_image: StringProperty(name="Style", subtype="FILE_PATH",
                                description="Style image (Style Video: a video file or a folder of frames)")
    style_strip: StringProperty(name="Style Strip", description="Movie or image strip that holds the style")
    model: StringProperty(name="Model", subtype="FILE_PATH",
                          description="Feedforward model: a name from the model list or a .safetensors file; empty "
                                      "to use the model trained on the Style Image (the shipped default without one)")
    temporal_weight: FloatProperty(name="Temporal Weight", default=1.0, min=0.0, soft_max=10.0,
                                   description="How strongly consecutive frames are held together (less flicker)")
    preserve_colors: EnumProperty(name="Preserve Colours", items=PRESERVE_ITEMS, default="NONE")
    size: IntProperty(name="Processing Size", default=0, min=0, soft_max=4096, subtype="PIXEL",
                      description="Long side in pixels to stylize at; 0 for the mode's default "
                                  "(full size for feedforward, 512 for optimization); frames are scaled back")
    loss_net: EnumProperty(name="Loss Network", items=LOSS_NET_ITEMS, default="AUTO",
                           description="The network that measures style and content (Optimization and Style "
                                       "Video modes)")
    iterations: IntProperty(name="Iterations", default=150, min=1, soft_max=2000,
                            description="Optimisation steps per frame at most (Optimization and Style Video): a frame "
                                        "stops earlier once its loss stops falling, usually after 40-60")
    batch: BoolProperty(name="Include in Batch", default=False,
                        description="Stylize this strip when a batch run (blender_addon.batch) asks for stale strips")
    uid: StringProperty(name="ID", description="Identifies this strip to its result strip (survives renames)")
    # Train Style (Feedforward mode).
    train_quality: EnumProperty(name="Quality", items=QUALITY_ITEMS, default="GOOD",
                                description="How long Train Style trains")
    train_own_frames: BoolProperty(name="Train on This Strip", default=True,
                                   description="Learn from this strip's own frames and motion (best for this shot), "
                                               "besides the general training data")
    train_start_over: BoolProperty(name="Start Over", default=False,
                                   description="Discard an interrupted training of this style instead of resuming it")
    no_model_style: StringProperty(name="No Model For",
                                   description="The style image the worker found no trained model for")
    # Result strips only.
    is_result: BoolProperty(name="Is Result", default=False)
    source_uid: StringProperty(name="Source ID")
    source_name: StringProperty(name="Source", description="The strip this result was made from")
    output_dir: StringProperty(name="Output Folder", subtype="DIR_PATH")
    job_hash: StringProperty(name="Job", description="Fingerprint of the settings this result was made with")


class StylecoreModelItem(bpy.types.PropertyGroup):
    """One feedforward model the worker knows (``name`` is the model's name)."""

    path: StringProperty(name="Path", subtype="FILE_PATH")
    origin: StringProperty(name="Origin", description="shipped, or user (trained)")
    style_name: StringProperty(name="Style")


class StylecoreSceneSettings(bpy.types.PropertyGroup):
    """Per-scene state the panel shows: the last message, the last preview frame, the models."""

    status: StringProperty(name="Status")
    preview_image: PointerProperty(name="Preview", type=bpy.types.Image)
    models: CollectionProperty(name="Models", type=StylecoreModelItem)


class StylecorePreferences(bpy.types.AddonPreferences):
    """Where the worker runs and where results go."""

    bl_idname = __package__

    worker_python: StringProperty(
        name="Worker Python", subtype="FILE_PATH",
        description="Python interpreter of the environment where stylecore is installed; empty to detect it",
    )
    device: EnumProperty(name="Device", items=DEVICE_ITEMS, default="AUTO")
    output_dir: StringProperty(
        name="Output Folder", subtype="DIR_PATH", default="//stylized/",
        description="Where stylized frames go; // is the folder of the .blend (a temp folder while unsaved)",
    )
    job_options: StringProperty(
        name="Extra Job Options",
        description='Advanced: JSON object of further stylecore job fields, e.g. {"tv_weight": 2.0}',
    )
    train_options: StringProperty(
        name="Extra Training Options",
        description='Advanced: JSON object of further Train Style settings, e.g. {"size": 192, "batch_size": 2}',
    )
    setup_pip_options: StringProperty(
        name="Set Up pip Options",
        description="Advanced: further pip options for Set Up Worker, e.g. --index-url URL for a mirror, or "
                    "--no-index --find-links FOLDER for wheels copied to this machine",
    )

    def draw(self, context: "bpy.types.Context") -> None:
        from .environment import SetupError, resolve_worker_python

        layout = self.layout
        layout.prop(self, "worker_python")
        try:
            python, how = resolve_worker_python(self.worker_python)
            layout.label(text=f"Worker: {python} ({how})", icon="CHECKMARK")
        except SetupError as exc:
            col = layout.column(align=True)
            col.label(text=str(exc), icon="ERROR")
        row = layout.row(align=True)
        row.operator("sequencer.stylize_check_worker", icon="PLUGIN")
        row.operator("preferences.stylecore_setup_worker", icon="IMPORT")
        _draw_setup(layout)
        layout.prop(self, "device")
        layout.prop(self, "output_dir")
        layout.prop(self, "job_options")
        layout.prop(self, "train_options")
        layout.prop(self, "setup_pip_options")


def _draw_setup(layout: "bpy.types.UILayout") -> None:
    """Set Up Worker's progress (with Cancel) while it runs, its result and log after."""
    from .operators import setup_worker_state

    setup = setup_worker_state()
    if setup is None:
        return
    box = layout.box()
    if not setup.finished:
        row = box.row(align=True)
        if hasattr(row, "progress"):  # UILayout.progress exists from Blender 4.0
            row.progress(factor=setup.fraction, type="BAR", text=setup.status)
        else:
            row.label(text=setup.status)
        row.operator("preferences.stylecore_setup_worker_cancel", text="", icon="CANCEL")
    else:
        box.label(text=setup.message, icon="CHECKMARK" if setup.state == "done" else "ERROR")
    row = box.row()
    row.label(text=f"Log: {setup.log_path}")
    row.operator("wm.path_open", text="", icon="TEXT").filepath = str(setup.log_path)


CLASSES = (StylecoreStripSettings, StylecoreModelItem, StylecoreSceneSettings, StylecorePreferences)


def register_properties() -> None:
    """Attach the groups to their owners (after the classes are registered)."""
    strip_type = vse.strip_type()
    setattr(strip_type, STRIP_SETTINGS, PointerProperty(type=StylecoreStripSettings))
    setattr(strip_type, STYLE_WEIGHT, FloatProperty(
        name="Style Weight", default=1.0, min=0.0, soft_max=2.0, options={"ANIMATABLE"},
        description="Strength of the style; keyframe it to vary the style along the strip",
    ))
    bpy.types.Scene.stylecore = PointerProperty(type=StylecoreSceneSettings)


def unregister_properties() -> None:
    strip_type = vse.strip_type()
    for name in (STRIP_SETTINGS, STYLE_WEIGHT):
        if hasattr(strip_type, name):
            delattr(strip_type, name)
    if hasattr(bpy.types.Scene, SCENE_SETTINGS):
        del bpy.types.Scene.stylecore


def preferences(context: "bpy.types.Context | None" = None) -> "StylecorePreferences | None":
    """The add-on's preferences, or None when it was registered without the add-on system."""
    context = context or bpy.context
    addon = context.preferences.addons.get(__package__)
    return None if addon is None else addon.preferences


def strip_settings(strip: "bpy.types.Strip") -> StylecoreStripSettings:
    return getattr(strip, STRIP_SETTINGS)


def scene_settings(scene: "bpy.types.Scene") -> StylecoreSceneSettings:
    return getattr(scene, SCENE_SETTINGS)


def style_weight(strip: "bpy.types.Strip") -> float:
    return float(getattr(strip, STYLE_WEIGHT))
